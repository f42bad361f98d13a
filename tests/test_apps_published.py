"""Published MCP Apps servers behind mcpgw: `@modelcontextprotocol/server-basic-vanillajs` and
`@modelcontextprotocol/server-map`, the ext-apps examples, over stdio, in both client eras.

What a host (Claude, ChatGPT, VS Code) does with an app, through the gateway: list the tools, take
the UI URI a tool names, read it, and render the HTML it gets under the app's MIME type with the
CSP domains it asks for. Everything but the URIs must equal what the same client gets directly.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.server.apps import APP_MIME_TYPE

from conftest import direct_stdio, gateway_stdio, pin_registry, write_registry

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]
BASIC_UI = "ui://get-time/mcp-app.html"
MAP_UI = "ui://cesium-map/mcp-app.html"


def entry(node: str, script: str) -> dict[str, Any]:
    return {"command": node, "args": [script, "--stdio"]}


async def app_of(client: Client, tool_name: str) -> tuple[types.Tool, types.TextResourceContents]:
    """What a host does: find the tool, and read the UI its `_meta.ui.resourceUri` names."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    tool = tools[tool_name]
    read = await client.read_resource((tool.meta or {})["ui"]["resourceUri"])
    [content] = read.contents
    assert isinstance(content, types.TextResourceContents)
    return tool, content


@pytest.mark.parametrize("mode", MODES)
async def test_the_ui_a_tool_names_reads_back_through_the_gateway(
    mode: str, registry_file: Any, node: str, apps_js: dict[str, str]
) -> None:
    entries = {name: entry(node, script) for name, script in apps_js.items()}
    config = registry_file(entries)
    with anyio.fail_after(60):
        async with gateway_stdio(config, mode=mode) as gateway:
            basic_tool, basic_app = await app_of(gateway, "basic__get-time")
            map_tool, map_app = await app_of(gateway, "map__show-map")
            listed = {str(r.uri): r.mime_type for r in (await gateway.list_resources()).resources}
            called = await gateway.call_tool("basic__get-time", {})
        async with direct_stdio(entries["basic"], mode=mode) as direct:
            basic_tool_d, basic_app_d = await app_of(direct, "get-time")
        async with direct_stdio(entries["map"], mode=mode) as direct:
            map_tool_d, map_app_d = await app_of(direct, "show-map")

    # The tool names its UI in the gateway's ui:// form, under the new and the older key alike.
    assert basic_tool.meta == {
        "ui": {"resourceUri": "ui://basic/get-time/mcp-app.html"},
        "ui/resourceUri": "ui://basic/get-time/mcp-app.html",
    }
    assert basic_tool_d.meta == {"ui": {"resourceUri": BASIC_UI}, "ui/resourceUri": BASIC_UI}
    assert (map_tool.meta or {})["ui"] == {"resourceUri": "ui://map/cesium-map/mcp-app.html"}
    assert listed == {
        "ui://basic/get-time/mcp-app.html": APP_MIME_TYPE,
        "ui://map/cesium-map/mcp-app.html": APP_MIME_TYPE,
    }

    # The app itself: the same HTML under the app MIME type, and the map's CSP domains intact.
    assert str(basic_app.uri) == "ui://basic/get-time/mcp-app.html"
    assert basic_app.mime_type == basic_app_d.mime_type == APP_MIME_TYPE
    assert basic_app.text == basic_app_d.text
    assert basic_app.text.lstrip().lower().startswith("<!doctype html>")
    assert map_app.mime_type == APP_MIME_TYPE
    assert map_app.text == map_app_d.text
    assert map_app.meta == map_app_d.meta
    csp = (map_app.meta or {})["ui"]["csp"]
    assert "https://*.openstreetmap.org" in csp["connectDomains"]
    assert "https://*.cesium.com" in csp["resourceDomains"]

    # Apart from names and URIs, the tools are the direct ones; the tool still answers.
    for through, direct_tool in ((basic_tool, basic_tool_d), (map_tool, map_tool_d)):
        assert through.description == direct_tool.description
        assert through.input_schema == direct_tool.input_schema
    assert not called.is_error
    assert set(called.structured_content or {}) == {"time"}


async def test_pinned_apps_are_served_in_production(
    tmp_path: Any, node: str, apps_js: dict[str, str]
) -> None:
    """`mcpgw pin` pins what the servers serve; the gateway's rewriting of their URIs keeps the pins valid."""
    entries = {name: entry(node, script) for name, script in apps_js.items()}
    config = write_registry(tmp_path / "servers.toml", entries, mode="production")
    with anyio.fail_after(120):
        _, lock = await anyio.to_thread.run_sync(pin_registry, config)  # the CLI runs its own event loop
        async with gateway_stdio(config) as gateway:
            tool, app = await app_of(gateway, "basic__get-time")
    # The pin is of the definition as the server serves it; the client gets the gateway's URIs.
    assert BASIC_UI in lock["basic"]["tools"]["get-time"].definition
    assert (tool.meta or {})["ui"]["resourceUri"] == "ui://basic/get-time/mcp-app.html"
    assert app.mime_type == APP_MIME_TYPE
