"""The MCP Apps extension declared upstream: per request to a 2026-07-28 upstream, by the registry's
`apps` option (default on) to a handshake-era session.

The upstream is the SDK's own MCP Apps server (`mcp.server.apps`) in memory; its tool says whether
the client it sees renders apps (`client_supports_apps`), which is what an Apps server branches on.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID, Apps, client_supports_apps
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError

from parity import gateway_client, registry, served

pytestmark = pytest.mark.anyio

RENDERS = [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})]


def app_server(*, middleware: list[Any] | None = None) -> MCPServer:
    server = MCPServer("apps", extensions=[Apps()], middleware=middleware)

    @server.tool()
    def renders(ctx: Context) -> str:
        """Whether the client this server sees renders MCP Apps."""
        return str(client_supports_apps(ctx))

    return server


async def seen(client: Client) -> str:
    result = await client.call_tool("renders", {})
    return result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("renders", [True, False])
async def test_a_2026_upstream_is_told_per_request_what_the_caller_renders(renders: bool) -> None:
    upstream = app_server()
    extensions: Any = RENDERS if renders else None
    async with Client(upstream, extensions=extensions) as direct:
        expected = await seen(direct)
    async with (
        served(registry({"ui": {"namespace": ""}}), {"ui": upstream}) as gateway,
        gateway_client(gateway, extensions=extensions) as through,
        gateway_client(gateway, extensions=None if renders else RENDERS) as other,
    ):
        assert gateway.upstreams["ui"].era == "stateless"
        assert await seen(through) == expected == str(renders)
        assert await seen(other) == str(not renders)  # the same shared session, told per request


async def test_apps_false_withholds_the_extension_from_a_2026_upstream() -> None:
    async with (
        served(registry({"ui": {"namespace": "", "apps": False}}), {"ui": app_server()}) as gateway,
        gateway_client(gateway, extensions=RENDERS) as through,
    ):
        assert await seen(through) == "False"


@pytest.mark.parametrize(("apps", "told"), [(None, "True"), (False, "False")])
async def test_a_handshake_era_upstream_is_told_by_the_registry(apps: bool | None, told: str) -> None:
    entry: dict[str, Any] = {"namespace": "", "era": "handshake"}
    if apps is not None:
        entry["apps"] = apps
    async with served(registry({"ui": entry}), {"ui": app_server()}) as gateway:
        assert gateway.upstreams["ui"].era == "handshake"
        for mode in ("auto", "legacy"):  # one session, shared by every client: declared for all
            async with gateway_client(gateway, mode=mode) as through:
                assert await seen(through) == told


async def test_a_handshake_caller_of_a_2026_only_upstream_is_judged_by_its_own_capabilities() -> None:
    """Its first call, whose handshake-era session the server refuses, falls back to the shared
    session still stamped with the caller's capabilities, as every later call is."""

    async def only_2026(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "initialize":
            raise MCPError(code=types.UNSUPPORTED_PROTOCOL_VERSION, message="2026-07-28 only")
        return await call_next(ctx)

    async with (
        served(registry({"ui": {"namespace": ""}}), {"ui": app_server(middleware=[only_2026])}) as gateway,
        gateway_client(gateway, mode="legacy") as through,  # declares no MCP Apps
    ):
        assert [await seen(through) for _ in range(2)] == ["False", "False"]
