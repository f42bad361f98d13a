"""Log lines from a 2026-07-28 upstream: asked for only on behalf of a client that can get them.

A 2026-07-28 upstream sends a call's log lines only when the request opts in (its `_meta` log
level), and answers such a call as an SSE stream rather than one JSON body. A handshake-era client
gets log lines unless its `logging/setLevel` filters them (mcpgw filters): the gateway asks for
all. A 2026-07-28 client gets them only when its own request opts in: without that, asking the
upstream would only make every call a stream whose log lines are then dropped.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import LOG_LEVEL_META_KEY

from conftest import gateway_stdio, write_registry
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


CHATTY = Path(__file__).parent / "servers" / "chatty.py"


async def test_relaying_an_upstream_log_line_puts_no_python_warning_in_the_gateways_log(
    tmp_path: Path,
) -> None:
    """The SDK marks sending log lines deprecated as of 2026-07-28 (SEP-2577) and warns where it is
    called. mcpgw relays them on purpose, to a handshake-era client that asked for them, so its own log
    (stderr: what a stdio client such as Claude Desktop keeps) must not carry that warning, with the
    gateway's source path, the first time a line is relayed."""
    config = write_registry(
        tmp_path / "servers.toml", {"up": {"command": sys.executable, "args": [str(CHATTY)]}}
    )
    config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    seen: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        seen.append(params.data)

    log = tmp_path / "gateway.log"
    with log.open("w") as errlog:
        async with gateway_stdio(config, mode="legacy", errlog=errlog, logging_callback=on_log) as client:
            with warnings.catch_warnings():  # this test's own client warns for its setLevel: not the gateway
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("info")
            result = await client.call_tool("up__say", {"text": "hello"})
            assert not result.is_error
            await until(lambda: seen)
    assert [line["msg"] for line in seen] == ["hello"]
    assert "Warning" not in log.read_text(), log.read_text()
