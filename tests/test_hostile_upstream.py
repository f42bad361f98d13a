"""A hostile upstream: its error replies are data, never a lever on the gateway or on other clients.

In memory: the upstream is an in-process lowlevel server whose tools answer with whatever error a
hostile server might send; the gateway is built by `build_gateway` and served to mcp clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from mcpgw.assembly import build_gateway
from mcpgw.config import validate
from mcpgw.core.gateway import Gateway
from mcpgw.server.handlers import build_server

pytestmark = pytest.mark.anyio

AWS = "AKIAIOSFODNN7EXAMPLE"


def hostile() -> Server[Any]:
    """`fail(code, message, data)` answers with exactly that JSON-RPC error; `slow` takes a while."""

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        schema = {"type": "object"}
        return types.ListToolsResult(
            tools=[types.Tool(name=name, input_schema=schema) for name in ("fail", "slow", "big")]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == "big":
            blob = "x" * int(arguments["size"])
            where = arguments["where"]
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=blob if where == "content" else "small")],
                structured_content={"blob": blob} if where == "structured" else None,
                _meta={"blob": blob} if where == "meta" else None,
            )
        if params.name == "slow":
            await anyio.sleep(float(arguments.get("seconds", 1)))
            return types.CallToolResult(content=[types.TextContent(type="text", text="done")])
        raise MCPError(
            code=int(arguments["code"]), message=str(arguments["message"]), data=arguments.get("data")
        )

    return Server("hostile", on_list_tools=list_tools, on_call_tool=call_tool)


@asynccontextmanager
async def gateway(**extra: Any) -> AsyncIterator[tuple[Gateway, Server[Any]]]:
    gateway_settings = {"max_result_bytes": 4096}
    registry = validate(
        {"gateway": gateway_settings, "servers": {"evil": {"command": "in-process", "timeout": 60}}, **extra},
        source="t",
    )
    built = build_gateway(registry, audit=None, in_process={"evil": hostile()}).gateway
    async with built.running():
        await built.wait_started()
        server, _ = build_server(built)
        yield built, server


async def error_of(client: Client, arguments: dict[str, Any]) -> types.ErrorData:
    with pytest.raises(MCPError) as caught:
        await client.call_tool("evil__fail", arguments)
    return caught.value.error


@pytest.mark.parametrize(
    ("code", "message"), [(-32000, "Connection closed"), (-32001, "Request 'tools/call' timed out")]
)
async def test_an_error_reply_coded_like_a_lost_connection_does_not_restart_the_upstream(
    code: int, message: str
) -> None:
    """Any client could kill a shared upstream with -32000, failing every other client's calls."""
    async with gateway() as (gw, server), Client(server) as victim, Client(server) as attacker:
        upstream = gw.upstreams["evil"]
        states: list[str] = []
        async with anyio.create_task_group() as tg:

            async def victims_call() -> None:
                result = await victim.call_tool("evil__slow", {"seconds": 1.5})
                states.append(result.content[0].text)  # type: ignore[union-attr]

            tg.start_soon(victims_call)
            for _ in range(5):
                error = await error_of(attacker, {"code": code, "message": message, "data": {"n": 1}})
                assert (error.code, error.message, error.data) == (code, message, {"n": 1})
        assert states == ["done"]  # the other client's call was never failed
        assert upstream.state == "ready" and upstream.connected


async def test_an_upstream_error_arrives_as_the_upstream_sent_it() -> None:
    async with gateway() as (_, server), Client(server) as client:
        data = {"field": "repo", "hint": ["a", "b"]}
        error = await error_of(client, {"code": -32602, "message": "repo is required", "data": data})
    assert (error.code, error.message, error.data) == (-32602, "repo is required", data)


async def test_secrets_in_an_upstream_error_pass_the_data_rules() -> None:
    rules = {
        "security": {"rules": [{"detectors": ["aws-key"], "directions": ["results"], "action": "redact"}]}
    }
    async with gateway(**rules) as (_, server), Client(server) as client:
        error = await error_of(
            client, {"code": -32603, "message": f"key {AWS} rejected", "data": {"key": AWS, "n": 7}}
        )
    assert AWS not in repr(error)
    assert error.message == "key [REDACTED:aws-key] rejected"
    assert error.data == {"key": "[REDACTED:aws-key]", "n": 7}


@pytest.mark.parametrize("where", ["content", "structured", "meta"])
async def test_every_part_of_a_result_counts_against_max_result_bytes(where: str) -> None:
    """`structuredContent` and `_meta` were not counted: 40 MB passed a 32 MB limit."""
    async with gateway() as (_, server), Client(server) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("evil__big", {"where": where, "size": 5000})
        assert "upstream 'evil'" in caught.value.error.message
        assert "max_result_bytes" in caught.value.error.message
        fits = await client.call_tool("evil__big", {"where": where, "size": 3000})
    assert not fits.is_error
