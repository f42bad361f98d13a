"""Which session gives way for a new one: `SessionLimits`' policy, in memory.

A stand-in for the SDK's session manager opens a session for each request
without `Mcp-Session-Id` and holds a request open while told to (a busy
session); the real manager behind a real gateway is `test_http_hardening`'s.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from mcpgw.server.sessions import SessionLimits

pytestmark = pytest.mark.anyio


class Transport:
    """What `SessionLimits` uses of the SDK's transport."""

    def __init__(self) -> None:
        self.is_terminated = False

    async def terminate(self) -> None:
        self.is_terminated = True


class Manager:
    """The SDK's session manager as `SessionLimits` sees it: sessions by id, and the ASGI app."""

    def __init__(self) -> None:
        self._server_instances: dict[str, Transport] = {}
        self.release = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        session = headers.get(b"mcp-session-id", b"").decode()
        if not session:
            session = uuid.uuid4().hex
            self._server_instances[session] = Transport()
        elif session not in self._server_instances or self._server_instances[session].is_terminated:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"mcp-session-id", session.encode())]}
        )
        if b"x-hold" in headers:
            await self.release.wait()
        await send({"type": "http.response.body", "body": b""})


async def request(
    app: SessionLimits, address: str, session: str | None = None, *, hold: bool = False
) -> tuple[int, str]:
    """One request from `address`; its status and the session it names."""
    headers = [(b"mcp-session-id", session.encode())] if session else []
    if hold:
        headers.append((b"x-hold", b"1"))
    scope = {"type": "http", "method": "POST", "headers": headers, "client": (address, 40000)}
    answer: dict[str, Any] = {}

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["session"] = dict(message["headers"]).get(b"mcp-session-id", b"").decode()

    await app(scope, receive, send)
    return answer["status"], answer["session"]


def limits(*, max_sessions: int, per_client: int) -> tuple[SessionLimits, Manager]:
    manager = Manager()
    return SessionLimits(manager, manager, max_sessions=max_sessions, per_client=per_client), manager  # type: ignore[arg-type]


def open_ones(app: SessionLimits, manager: Manager) -> set[str]:
    return {s for s, t in manager._server_instances.items() if not t.is_terminated}


async def test_a_client_at_its_share_gives_up_its_own_least_recently_used_idle_session() -> None:
    app, manager = limits(max_sessions=10, per_client=3)
    first, second, third = [(await request(app, "10.0.0.1"))[1] for _ in range(3)]
    other = (await request(app, "10.0.0.2"))[1]
    assert (await request(app, "10.0.0.1", first))[0] == 200  # used again: `second` is now the oldest
    status, fourth = await request(app, "10.0.0.1")
    assert status == 200
    assert open_ones(app, manager) == {first, third, fourth, other}
    assert second not in open_ones(app, manager)


async def test_at_max_sessions_the_client_holding_the_most_gives_way() -> None:
    app, manager = limits(max_sessions=4, per_client=3)
    light = (await request(app, "10.0.0.2"))[1]  # the least recently used of all; yet it stays
    heavy = [(await request(app, "10.0.0.1"))[1] for _ in range(3)]
    status, newcomer = await request(app, "10.0.0.3")
    assert status == 200
    assert open_ones(app, manager) == {*heavy[1:], light, newcomer}
    # With sessions of its own, a client at the limit gives up its own first.
    status, again = await request(app, "10.0.0.3")
    assert status == 200
    assert open_ones(app, manager) == {*heavy[1:], light, again}


async def test_busy_sessions_never_give_way_and_only_their_owner_is_refused() -> None:
    app, manager = limits(max_sessions=3, per_client=2)
    async with anyio.create_task_group() as tg:
        hogged = [(await request(app, "10.0.0.1"))[1] for _ in range(2)]
        for session in hogged:
            tg.start_soon(lambda s=session: request(app, "10.0.0.1", s, hold=True))
        await anyio.wait_all_tasks_blocked()
        assert (await request(app, "10.0.0.1"))[0] == 503  # its own are all busy
        status, other = await request(app, "10.0.0.2")
        assert status == 200
        status, another = await request(app, "10.0.0.3")  # gives way: the only idle session is `other`
        assert status == 200 and open_ones(app, manager) == {*hogged, another}
        assert other not in open_ones(app, manager)
        manager.release.set()
    status, _ = await request(app, "10.0.0.1")
    assert status == 200


async def test_sessions_that_ended_are_forgotten_before_any_gives_way() -> None:
    app, manager = limits(max_sessions=2, per_client=2)
    ended, kept = [(await request(app, "10.0.0.1"))[1] for _ in range(2)]
    manager._server_instances[ended].is_terminated = True  # idle timeout, or its client's DELETE
    status, new = await request(app, "10.0.0.2")
    assert status == 200 and open_ones(app, manager) == {kept, new}
