"""What a call's audit row says it forwarded: the tool really called and the arguments really sent.

In search mode the client calls `call_tool` with the tool's name inside; the row names that tool,
so `mcpgw logs --tool X` finds it. A persona's fixed argument replaces the client's: the row holds
the value sent upstream, not the one the client asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from click.testing import CliRunner
from mcp.shared.exceptions import MCPError

from conftest import lite_server, write_registry
from mcpgw.cli import cli
from parity import TestUpstream, gateway_client, registry, served

pytestmark = pytest.mark.anyio

PERSONAS: dict[str, Any] = {
    "finder": {"catalog": "search"},
    "fixed": {"tools": {"up__add": {"fixed": {"b": 100}}}},
}


def call_rows(db_path: Path) -> list[dict[str, Any]]:
    db = sqlite_utils.Database(db_path)
    return list(
        db.query("select persona, name, arguments, result from events where kind = 'call' order by id")
    )


async def test_search_mode_calls_are_logged_under_the_tool_called(tmp_path: Path, audit_db: Path) -> None:
    gateway_of = served(registry(personas=PERSONAS), {"up": TestUpstream()})
    async with gateway_of as gateway, gateway_client(gateway, persona="finder") as client:
        await client.call_tool("search_tools", {"query": "echo"})
        result = await client.call_tool("call_tool", {"name": "up__echo", "arguments": {"message": "found"}})
        assert result.content[0].text == "found"  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="Unknown tool: up__nope"):
            await client.call_tool("call_tool", {"name": "up__nope", "arguments": {}})
    rows = call_rows(audit_db)
    # A tool that is not there is logged under the name asked for, with what the client sent.
    assert [(row["name"], row["arguments"]) for row in rows] == [
        ("search_tools", '{"query":"echo"}'),
        ("up__echo", '{"message":"found"}'),
        ("up__nope", '{"name":"up__nope","arguments":{}}'),
    ]
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    listed = CliRunner().invoke(cli, ["logs", "-c", str(config), "--json", "--tool", "up__echo"])
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["persona"] for line in listed.stdout.splitlines()] == ["finder"]


async def test_a_fixed_argument_is_logged_as_forwarded(audit_db: Path) -> None:
    gateway_of = served(registry(personas=PERSONAS), {"up": TestUpstream()})
    async with gateway_of as gateway, gateway_client(gateway, persona="fixed") as client:
        result = await client.call_tool("up__add", {"a": 1})
    assert result.structured_content == {"sum": 101}
    [row] = call_rows(audit_db)
    assert json.loads(row["arguments"]) == {"a": 1, "b": 100}
