"""The lean forward path keeps what the SDK's path kept (`upstream.wire`, `upstream.httpwire`).

A forwarded call to a stdio upstream is written as one line and answered off the read loop; one to a
2026-07-28 HTTP upstream is posted on the pooled client. Each case here is something that path
must still do: forward and return JSON the fast parser refuses (integers over 64 bits), relay the
upstream's progress, tell the upstream a call timed out, and end a call whose upstream died
instead of leaving it waiting. The gateway and its client are in memory; the upstreams are real
processes, since their pipe and socket are the point.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

import parity
from conftest import SERVERS, background, free_port
from mcpgw.config import validate
from mcpgw.server.handlers import build_server
from mcpgw.server.notify import notification_options

pytestmark = pytest.mark.anyio

STDIO = {"command": sys.executable, "args": [str(SERVERS / "upstream.py")]}


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    with background([sys.executable, str(SERVERS / "upstream.py"), "--http", str(port)], port=port):
        yield f"http://127.0.0.1:{port}/mcp"


def _entry(transport: str, http_url: str, **extra: Any) -> dict[str, Any]:
    return {**(STDIO if transport == "stdio" else {"url": http_url}), **extra}


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_integers_beyond_64_bits_go_up_and_come_back(transport: str, http_url: str) -> None:
    config = validate({"servers": {"up": _entry(transport, http_url)}}, source="test")
    async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
        if transport == "http":
            assert gateway.upstreams["up"].era == "stateless"  # the lean HTTP path is the 2026-07-28 one
        result = await client.call_tool("up__add", {"a": 2**70, "b": 1})
    assert not result.is_error
    assert result.structured_content == {"sum": 2**70 + 1}


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_the_upstreams_progress_reaches_the_caller(transport: str, http_url: str) -> None:
    config = validate({"servers": {"up": _entry(transport, http_url)}}, source="test")
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total, message))

    async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
        result = await client.call_tool("up__slow", {"steps": 3, "delay": 0.01}, progress_callback=progress)
    assert result.content[0].text == "done after 3 steps"  # type: ignore[union-attr]
    assert seen == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_result_over_max_result_bytes_is_refused_and_one_under_it_passes(
    transport: str, http_url: str
) -> None:
    """The size walk is skipped for an answer whose line (stdio) or body (HTTP) is under the limit:
    one over it is still counted and refused, on both lean paths."""
    config = validate(
        {"gateway": {"max_result_bytes": 4096}, "servers": {"up": _entry(transport, http_url)}}, source="test"
    )
    async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
        fits = await client.call_tool("up__echo", {"message": "x" * 1500})
        with pytest.raises(MCPError) as caught:
            await client.call_tool("up__echo", {"message": "x" * 5000})
    assert fits.content[0].text == "x" * 1500  # type: ignore[union-attr]
    assert "upstream 'up'" in caught.value.error.message
    assert "max_result_bytes" in caught.value.error.message


async def test_a_timed_out_call_is_cancelled_upstream(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    entry = {**STDIO, "env": {"UPSTREAM_CANCEL_MARKER": str(marker)}, "tool_timeouts": {"sleep": 0.5}}
    config = validate({"servers": {"up": entry}}, source="test")
    async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("up__sleep", {"seconds": 600})
        assert "upstream 'up': tools/call timed out after 0.5s" in caught.value.error.message
        with anyio.fail_after(60):  # the courtesy cancel reached the upstream, which stopped sleeping
            while not marker.exists():
                await anyio.sleep(0.05)
        # The connection is still good for the next call.
        assert (await client.call_tool("up__echo", {"message": "still here"})).content[0].text == "still here"  # type: ignore[union-attr]


async def test_calls_in_flight_each_time_out_after_their_own_timeout() -> None:
    """One timer serves a connection's calls in flight (`upstream.wire`): a call with a shorter timeout
    than one already waiting still times out after its own, and so does one whose deadline comes after
    a call that timed out first."""
    entry = {**STDIO, "timeout": 600, "tool_timeouts": {"sleep": 0.5}}
    config = validate({"servers": {"up": entry}}, source="test")
    async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
        outcomes: dict[str, str] = {}

        async def call(key: str, name: str, arguments: dict[str, Any]) -> None:
            try:
                await client.call_tool(name, arguments)
                outcomes[key] = "answered"
            except MCPError as exc:
                outcomes[key] = exc.error.message

        async def started(key: str, name: str, arguments: dict[str, Any], in_flight: int) -> None:
            tg.start_soon(call, key, name, arguments)
            with anyio.fail_after(60):
                while gateway.upstreams["up"].in_flight < in_flight:
                    await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            await started("long", "up__slow", {"steps": 1, "delay": 600}, 1)
            await started("first", "up__sleep", {"seconds": 600}, 2)
            await started("second", "up__sleep", {"seconds": 600}, 3)
            with anyio.fail_after(60):  # a hang guard: each times out after 0.5 s, not the server's 600 s
                while len(outcomes) < 2:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    timed_out = "upstream 'up': tools/call timed out after 0.5s"
    assert timed_out in outcomes["first"] and timed_out in outcomes["second"], outcomes
    assert "long" not in outcomes


async def test_a_call_whose_upstream_dies_ends_at_once() -> None:
    config = validate({"servers": {"up": {**STDIO, "timeout": 600}}}, source="test")
    async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
        pid = int((await client.call_tool("up__pid", {})).content[0].text)  # type: ignore[union-attr]
        outcome: list[BaseException | str] = []

        async def call() -> None:
            try:
                outcome.append((await client.call_tool("up__sleep", {"seconds": 600})).content[0].text)  # type: ignore[union-attr]
            except MCPError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(60):
                while gateway.upstreams["up"].in_flight == 0:
                    await anyio.sleep(0.01)
            os.kill(pid, 9)
            with anyio.fail_after(60):  # a hang guard: the call ends when the pipe does, not after 600 s
                while not outcome:
                    await anyio.sleep(0.05)
    assert isinstance(outcome[0], MCPError)
    assert "upstream 'up'" in outcome[0].error.message


async def test_a_handshake_era_client_gets_no_2026_fields_when_its_upstream_speaks_its_version() -> None:
    """The result is not re-shaped when client and upstream speak the same version, yet the 2026-07-28
    cache hints the SDK's runner adds to `resources/read` must still not reach a 2025-11-25 client."""
    config = parity.registry({"up": {"era": "handshake"}})
    async with parity.served(config, {"up": parity.TestUpstream()}, audit=None) as gateway:
        assert gateway.upstreams["up"].protocol_version == "2025-11-25"
        server, _ = build_server(gateway)
        options = server.create_initialization_options(notification_options())
        async with parity.wire(server, options=options) as (read, write):

            async def send(message: dict[str, Any]) -> None:
                await write.send(SessionMessage(types.jsonrpc_message_adapter.validate_python(message)))

            async def ask(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
                await send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
                with anyio.fail_after(60):
                    while True:
                        got = await read.receive()
                        answer = got.message.model_dump(by_alias=True, exclude_unset=True)
                        if answer.get("id") == request_id:
                            return answer

            info = {"name": "raw", "version": "1"}
            await ask(
                1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": info}
            )
            await send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            reply = await ask(2, "resources/read", {"uri": "mcpgw://up/test://static"})
    assert reply["result"]["contents"][0]["text"], reply
    assert "ttlMs" not in reply["result"] and "cacheScope" not in reply["result"], reply["result"]
