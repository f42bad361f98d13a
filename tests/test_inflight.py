"""One registry of calls in flight per upstream: log lines and sampling read the same calls.

A resource read or prompt get is a call in flight on its upstream as much as a
tool call is: while one runs next to a tool call, an upstream log line could be
either's, so it goes to neither client stream. (A handshake-era upstream: a
2026-07-28 one logs only for requests that opt in, and mcpgw opts in for tool
calls only.) In memory (tests/parity.py), with an in-process twin of servers/chatty.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server.mcpserver import Context, MCPServer

from parity import gateway_client, registry, served

pytestmark = pytest.mark.anyio


def chatty(holding: anyio.Event) -> MCPServer:
    """Logs from a tool (`say`), a resource read and a prompt; `hold` logs nothing and sets `holding`."""
    mcp = MCPServer("chatty")

    @mcp.tool()
    async def hold(seconds: float) -> str:
        """Sleep; logs nothing."""
        holding.set()
        await anyio.sleep(seconds)
        return f"held {seconds}"

    @mcp.tool()
    async def say(text: str, ctx: Context) -> str:
        """Log `text` at info, then answer."""
        await ctx.info(text)
        return "said"

    # A template: MCPServer hands a Context only to templated resources; chatty://note matches it.
    @mcp.resource("chatty://{name}", mime_type="text/plain")
    async def note(name: str, ctx: Context) -> str:
        """Logs one line while it is read."""
        await ctx.info("from the resource read")
        return f"a {name}"

    @mcp.prompt()
    async def chatty(ctx: Context) -> str:
        """Logs one line while it is rendered."""
        await ctx.info("from the prompt")
        return "hello"

    return mcp


async def test_log_line_of_a_read_next_to_a_tool_call_is_not_relayed_to_the_tool_call() -> None:
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data.get("msg") if isinstance(params.data, dict) else params.data)

    async def logged(line: str) -> None:
        with anyio.fail_after(60):
            while line not in logs:
                await anyio.sleep(0.01)

    holding = anyio.Event()
    config = registry({"chatty": {"namespace": "", "era": "handshake"}})
    async with (
        served(config, {"chatty": chatty(holding)}) as gateway,
        gateway_client(gateway, mode="legacy", logging_callback=on_log, log_level="info") as client,
    ):
        # Alone, a tool call's log line reaches its client (the relay works here at all).
        await client.call_tool("say", {"text": "from the tool"})
        await logged("from the tool")
        assert logs == ["from the tool"]

        # A read and a prompt get while a tool call is in flight: two calls, so their lines go nowhere.
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "hold", {"seconds": 600})
            with anyio.fail_after(60):
                await holding.wait()  # the tool call is in flight at the upstream
            read = await client.read_resource("chatty://note")
            prompt = await client.get_prompt("chatty")
            tg.cancel_scope.cancel()
        assert read.contents[0].text == "a note"  # type: ignore[union-attr]
        assert prompt.messages
        # A barrier instead of a wait: a later tool call's line arrives after any line the read or
        # the prompt could have had relayed, on the same stream.
        await client.call_tool("say", {"text": "barrier"})
        await logged("barrier")
        assert logs == ["from the tool", "barrier"], (
            "a read's or prompt's log line was relayed to a tool call"
        )
