"""Requests to an HTTP upstream without a login go out side by side, and a 401 still means a login.

The auth every URL server gets (`upstream.login.LoginAuth`, over the SDK's `OAuthClientProvider`)
once sent one request at a time to the whole server: the SDK's flow holds its lock from sending a
request to its answer. Here a real httpx client with that auth talks to an in-process ASGI server
that answers nothing until two requests are in flight at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcpgw.config.servers import HttpServer
from mcpgw.errors import NeedsLogin
from mcpgw.upstream import login

pytestmark = pytest.mark.anyio

URL = "http://upstream.test/mcp"
HANG_GUARD = 20


class Upstream:
    """An ASGI server: `/mcp` answers once `together` requests are in flight; `/refuses` says 401."""

    def __init__(self, together: int) -> None:
        self.together = together
        self.in_flight = 0
        self.most = 0
        self.all_in = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/refuses":
            challenge = [(b"www-authenticate", b'Bearer resource_metadata="http://upstream.test/none"')]
            await send({"type": "http.response.start", "status": 401, "headers": challenge})
            await send({"type": "http.response.body", "body": b""})
            return
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.together:
            self.all_in.set()
        await self.all_in.wait()
        self.in_flight -= 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})


def client_for(upstream: Upstream, tmp_path: Path) -> httpx2.AsyncClient:
    auth = login.upstream_auth("up", HttpServer(url=URL), URL, tmp_path, {})
    assert auth is not None
    return httpx2.AsyncClient(auth=auth, transport=httpx2.ASGITransport(app=upstream))


async def test_requests_to_a_server_without_a_login_go_out_side_by_side(tmp_path: Path) -> None:
    upstream = Upstream(together=1)
    async with client_for(upstream, tmp_path) as http:
        assert (await http.post(URL, content=b"{}")).status_code == 200  # the provider loads its (no) tokens
        upstream.together, upstream.all_in = 3, anyio.Event()
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await http.post(URL, content=b"{}")).status_code)

        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(one)
    assert statuses == [200, 200, 200] and upstream.most == 3


async def test_a_401_from_a_server_without_a_login_still_needs_a_login(tmp_path: Path) -> None:
    upstream = Upstream(together=1)
    async with client_for(upstream, tmp_path) as http:
        await http.post(URL, content=b"{}")
        with anyio.fail_after(HANG_GUARD), pytest.raises(NeedsLogin):
            await http.post("http://upstream.test/refuses", content=b"{}")
