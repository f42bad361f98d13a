"""An upstream that goes down while the gateway runs: its tools stay listed, and calls to them get an
error naming the server and its state, never "Unknown tool"; when it comes back, they work again.

Real upstream processes (streamable HTTP, SSE and stdio) killed under a running `mcpgw serve` in
its default configuration: the calls themselves meet the outage, no faster ping is configured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import SERVERS, UPSTREAM, background, free_port, gateway_stdio
from mcpgw.config import validate
from parity import served
from test_gateway import wait_until as until
from test_lifecycle import alive, wait_until

pytestmark = pytest.mark.anyio

HANG_GUARD = 120.0
"""Seconds a wait may take before the test calls it a hang: never reached on a loaded machine."""


async def error_of(client: Client, name: str, arguments: dict[str, Any]) -> str | None:
    """The error a call gets (None if it succeeds)."""
    try:
        result = await client.call_tool(name, arguments)
    except MCPError as exc:
        return exc.error.message
    return f"isError: {result.content}" if result.is_error else None


async def listed(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_a_killed_http_upstream_keeps_its_tools_and_names_itself_in_errors(
    transport: str, registry_file: Any
) -> None:
    port = free_port()
    command = [sys.executable, str(UPSTREAM), f"--{transport}", str(port)]
    entry: dict[str, Any] = {"url": f"http://127.0.0.1:{port}/{'mcp' if transport == 'http' else 'sse'}"}
    if transport == "sse":
        entry["transport"] = "sse"
    # No pings: the failed calls alone must tell the gateway its upstream is gone.
    config = registry_file({"web": entry}, restart_backoff_max=1, ping_interval=0)
    with contextlib.ExitStack() as upstream:
        upstream.enter_context(background(command, port=port))
        async with gateway_stdio(config) as client:
            assert await error_of(client, "web__echo", {"message": "up"}) is None
            upstream.close()  # the process is killed, its port closed

            errors = [await error_of(client, "web__echo", {"message": "gone"}) for _ in range(3)]
            for error in errors:
                assert error is not None and error.startswith("upstream 'web': "), errors
                assert "Unknown tool" not in error
            # Once the gateway knows, the error says what it knows: down, in which state, and why.
            with anyio.fail_after(HANG_GUARD):
                while "down (" not in (error := await error_of(client, "web__echo", {"message": "x"}) or ""):
                    await anyio.sleep(0.1)
            assert error.startswith("upstream 'web': down (") and "last error: " in error, error
            assert "web__echo" in await listed(client)

            with background(command, port=port):  # back: the gateway reconnects by itself
                with anyio.fail_after(HANG_GUARD):
                    while await error_of(client, "web__echo", {"message": "back"}) is not None:
                        await anyio.sleep(0.1)
                assert "web__echo" in await listed(client)


@pytest.mark.parametrize("restart", [True, False])
async def test_a_killed_stdio_upstream_keeps_its_tools_and_names_itself_in_errors(
    restart: bool, registry_file: Any
) -> None:
    tiny = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")], "restart": restart}
    config = registry_file({"t": tiny})
    async with gateway_stdio(config) as client:
        first = await client.call_tool("t__pid", {})
        assert first.structured_content is not None
        pid = int(first.structured_content["result"])
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(pid), HANG_GUARD)
        error = await error_of(client, "t__echo", {"message": "gone"})
        if restart:  # it may be back already; if not, the error names it
            assert error is None or error.startswith("upstream 't': "), error
        else:
            # Never restarted: it stays listed, and says so (the exit is noticed within a poll).
            with anyio.fail_after(HANG_GUARD):
                while error is not None and "down (failed" not in error:
                    await anyio.sleep(0.05)
                    error = await error_of(client, "t__echo", {"message": "gone"})
            assert error is not None
            assert error.startswith("upstream 't': down (failed, not restarted; last error: "), error
        assert "t__echo" in await listed(client)
        if restart:
            with anyio.fail_after(HANG_GUARD):
                while await error_of(client, "t__echo", {"message": "back"}) is not None:
                    await anyio.sleep(0.1)


async def test_an_http_upstream_started_after_the_gateway_is_met_in_its_own_era() -> None:
    """A 2026-07-28 server not up yet when the gateway starts (a compose file starts both at once) is
    connected in 2026-07-28 once it is up: its refused connections say nothing about its era. They
    used to cancel the era probe, which left it on 2025-11-25 for good."""
    port = free_port()
    config = validate(
        {"gateway": {"restart_backoff_max": 1}, "servers": {"web": {"url": f"http://127.0.0.1:{port}/mcp"}}},
        source="test",
    )
    async with served(config, {}, audit=None) as gateway:
        upstream = gateway.upstreams["web"]
        await until(
            lambda: upstream.state != "starting" and upstream.error, timeout=HANG_GUARD
        )  # refused once
        with background([sys.executable, str(UPSTREAM), "--http", str(port)], port=port):
            await until(lambda: upstream.state == "ready", timeout=HANG_GUARD)
            assert upstream.protocol_version == "2026-07-28"
            answer = await gateway.call_tool({"name": "web__echo", "arguments": {"message": "late"}})
            assert answer["content"][0]["text"] == "late"
