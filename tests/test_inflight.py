"""One registry of calls in flight per upstream: log lines and sampling read the same calls.

A resource read or prompt get is a call in flight on its upstream as much as a
tool call is: while one runs next to a tool call, an upstream log line could be
either's, so it goes to neither client stream. (A handshake-era upstream: a
2026-07-28 one logs only for requests that opt in, and mcpgw opts in for tool
calls only.)
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
import pytest

from conftest import SERVERS, gateway_stdio

pytestmark = pytest.mark.anyio

CHATTY = {
    "command": sys.executable,
    "args": [str(SERVERS / "chatty.py")],
    "namespace": "",
    "era": "handshake",
}


async def test_log_line_of_a_read_next_to_a_tool_call_is_not_relayed_to_the_tool_call(
    registry_file: Any,
) -> None:
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data.get("msg") if isinstance(params.data, dict) else params.data)

    config = registry_file({"chatty": CHATTY})
    async with gateway_stdio(config, mode="legacy", logging_callback=on_log, log_level="info") as client:
        # Alone, a tool call's log line reaches its client (the relay works here at all).
        await client.call_tool("say", {"text": "from the tool"})
        with anyio.fail_after(10):
            while not logs:
                await anyio.sleep(0.02)
        assert logs == ["from the tool"]

        # A read and a prompt get while a tool call is in flight: two calls, so their lines go nowhere.
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "hold", {"seconds": 1.0})
            await anyio.sleep(0.3)
            read = await client.read_resource("chatty://note")
            prompt = await client.get_prompt("chatty")
        assert read.contents[0].text == "a note"  # type: ignore[union-attr]
        assert prompt.messages
        await anyio.sleep(0.2)
        assert logs == ["from the tool"], "a read's or prompt's log line was relayed to a tool call"
