"""A tool's `execution` (`taskSupport`) reaches clients of every era as its server declared it.

The 2026-07-28 schema dropped `Tool.execution` (tasks became an extension), and the SDK shapes a
2026 listing by that schema; through mcpgw a 2026 client lost what the same client sees when it
connects to a handshake-era server directly (and what a 2026 server that still sends it declares).
In memory for every pair of upstream era and client era, and with the published server-everything.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server import Server

from conftest import direct_stdio, gateway_stdio
from parity import MODES, gateway_client, registry, served

pytestmark = pytest.mark.anyio

EXECUTION = {"taskSupport": "optional"}


def tasks_upstream() -> Server[Any]:
    """A server whose tool declares task support in every era, as the TypeScript SDK's servers do.

    The Python SDK shapes a 2026-07-28 listing by that era's schema (no `execution`); this server
    answers `tools/list` itself (a middleware that owns its result), so a 2026 upstream sends it too.
    """
    tool = {"name": "report", "inputSchema": {"type": "object"}, "execution": EXECUTION}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool.model_validate(tool)])

    async def listing(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/list":
            return {"tools": [tool], "ttlMs": 0, "cacheScope": "private", "resultType": "complete"}
        return await call_next(ctx)

    server: Server[Any] = Server("tasks", on_list_tools=list_tools)
    server.middleware.append(listing)
    return server


@pytest.mark.parametrize("era", ["handshake", "stateless"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_tools_execution_reaches_clients_of_every_era(era: str, mode: str) -> None:
    async with served(registry({"up": {"era": era}}), {"up": tasks_upstream()}, audit=None) as gateway:
        assert gateway.upstreams["up"].era == era
        async with gateway_client(gateway, mode=mode) as client:
            [tool] = (await client.list_tools()).tools
            again = (await client.list_tools()).tools  # the listing cache serves the same
    assert tool.name == "up__report"
    assert tool.execution is not None
    assert tool.execution.model_dump(by_alias=True, exclude_none=True) == EXECUTION
    assert again == [tool]


@pytest.mark.parametrize("mode", MODES)
async def test_server_everythings_task_tool_keeps_its_execution(
    mode: str, registry_file: Any, node: str, everything_js: str
) -> None:
    entry = {"command": node, "args": [everything_js, "stdio"]}
    config = registry_file({"everything": entry})
    with anyio.fail_after(60):
        async with direct_stdio(entry, mode=mode) as direct, gateway_stdio(config, mode=mode) as gateway:
            direct_tools = {t.name: t for t in (await direct.list_tools()).tools}
            gateway_tools = {t.name: t for t in (await gateway.list_tools()).tools}
    declared = {name: t.execution for name, t in direct_tools.items() if t.execution is not None}
    assert declared["simulate-research-query"] == types.ToolExecution(task_support="required")
    assert {name: gateway_tools[f"everything__{name}"].execution for name in declared} == declared
