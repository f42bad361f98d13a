"""Log lines from a 2026-07-28 upstream: asked for only on behalf of a client that can get them.

A 2026-07-28 upstream sends a call's log lines only when the request opts in (its `_meta` log
level), and answers such a call as an SSE stream rather than one JSON body. A handshake-era client
gets log lines unless its `logging/setLevel` filters them (mcpgw filters): the gateway asks for
all. A 2026-07-28 client gets them only when its own request opts in: without that, asking the
upstream would only make every call a stream whose log lines are then dropped.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import LOG_LEVEL_META_KEY

from parity import gateway_client, registry, served
from test_gateway import wait_until as until

pytestmark = pytest.mark.anyio


def chatty() -> MCPServer:
    mcp = MCPServer("chatty")

    @mcp.tool()
    async def asked(ctx: Context) -> str:
        """Log a line, and say which log level the request asked for."""
        await ctx.info("a line")
        meta = ctx.request_context.meta
        raw = meta if isinstance(meta, dict) else (meta.model_dump(by_alias=True) if meta is not None else {})
        return str(raw.get(LOG_LEVEL_META_KEY))

    return mcp


@pytest.mark.parametrize(
    ("mode", "log_level", "asked", "lines"),
    [
        ("auto", None, "None", 0),  # 2026-07-28, no opt-in: nothing asked, nothing sent
        ("auto", "info", "debug", 1),  # opted in: asked, and the line reaches it
        ("legacy", None, "debug", 1),  # handshake era: asked for all, filtered by its setLevel
    ],
)
async def test_a_call_asks_the_upstream_for_log_lines_only_for_a_client_that_gets_them(
    mode: str, log_level: str | None, asked: str, lines: int
) -> None:
    seen: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        seen.append(params.data)

    kwargs: dict[str, Any] = {"logging_callback": on_log}
    if log_level is not None:
        kwargs["log_level"] = log_level
    async with (
        served(registry({"up": {"era": "stateless"}}), {"up": chatty()}) as gateway,
        gateway_client(gateway, mode=mode, **kwargs) as client,
    ):
        result = await client.call_tool("up__asked", {})
        assert result.content[0].text == asked  # type: ignore[union-attr]
        await until(lambda: len(seen) >= lines, timeout=10)  # a line said before the result, or none
        assert seen == ["a line"] * lines
