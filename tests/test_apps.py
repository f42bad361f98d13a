"""MCP Apps (`io.modelcontextprotocol/ui`) through the gateway, in memory (tests/parity.py).

The upstreams are the SDK's own MCP Apps servers (`mcp.server.apps.Apps`): a tool names its UI in
`_meta.ui.resourceUri` (and the older `ui/resourceUri` and ChatGPT's `openai/outputTemplate`), the
UI is a `ui://` resource served as `text/html;profile=mcp-app` with its CSP and permissions in
`_meta.ui`. Through mcpgw each `ui://` URI stays `ui://` (`ui://<server>/<rest>`), every key naming
it says the same, and reading it gives what the upstream gives. The published example servers are
in test_apps_published.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import tomlkit
from mcp import Client
from mcp.server import Server
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID, Apps, ResourceCsp, ResourcePermissions
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from mcpgw.security import pins
from parity import MODES, gateway_client, normalise, registry, served

pytestmark = pytest.mark.anyio

UI = "ui://app/main.html"
"""The same URI on both upstreams: through the gateway they must not collide."""
UI_KEYS = ("ui/resourceUri", "openai/outputTemplate")
CSP = ResourceCsp(connect_domains=["https://api.example.com"], resource_domains=["https://cdn.example.com"])


def app_server(name: str, *, shows: str = UI) -> MCPServer:
    """An MCP Apps server: a UI tool naming its app (`shows`) under every key, the apps, a UI template."""
    apps = Apps()

    @apps.tool(resource_uri=shows, visibility=["model", "app"], meta=dict.fromkeys(UI_KEYS, shows))
    def show(city: str = "Paris") -> str:
        """Show the city on a map."""
        return f"{name}: {city}"

    apps.add_html_resource(
        UI,
        f"<!doctype html><title>{name}</title>",
        csp=CSP,
        permissions=ResourcePermissions(clipboard_write={}),
        domain=f"{name}.apps.example.com",
        prefers_border=True,
    )
    if shows != UI:
        apps.add_html_resource(shows, f"<!doctype html><title>{name} {shows}</title>")
    server = MCPServer(name, extensions=[apps])

    @server.resource(
        "ui://widgets/{kind}.html", mime_type=APP_MIME_TYPE, meta={"ui": {"prefersBorder": False}}
    )
    def widget(kind: str) -> str:
        return f"<!doctype html><title>{name} {kind}</title>"

    return server


def direct_client_of(server: MCPServer, mode: str = "auto") -> Client:
    return Client(server, mode=mode, cache=None)


def exposed(server: str, uri: str) -> str:
    return f"ui://{server}/{uri.removeprefix('ui://')}"


def ui_meta(tool: types.Tool) -> dict[str, Any]:
    meta = tool.meta or {}
    return {"ui": meta["ui"], **{key: meta[key] for key in UI_KEYS}}


@pytest.mark.parametrize("mode", MODES)
async def test_every_ui_uri_a_tool_names_reads_back_as_its_app(mode: str) -> None:
    upstreams = {"clock": app_server("clock"), "map": app_server("map")}
    async with (
        served(registry({"clock": {}, "map": {}}), upstreams, audit=None) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        named = {server: ui_meta(tools[f"{server}__show"]) for server in upstreams}
        reads = {
            server: await client.read_resource(named[server]["ui"]["resourceUri"]) for server in upstreams
        }
        by_old_keys = {
            (server, key): await client.read_resource(named[server][key])
            for server in upstreams
            for key in UI_KEYS
        }
        async with direct_client_of(upstreams["map"], mode) as direct:
            direct_tool = (await direct.list_tools()).tools[0]
            direct_read = await direct.read_resource(UI)

    for server in upstreams:
        uri = exposed(server, UI)
        assert named[server] == {
            "ui": {"resourceUri": uri, "visibility": ["model", "app"]},
            **dict.fromkeys(UI_KEYS, uri),
        }
        assert listed[uri].mime_type == APP_MIME_TYPE
        [content] = reads[server].contents
        assert str(content.uri) == uri
        assert content.mime_type == APP_MIME_TYPE
        assert isinstance(content, types.TextResourceContents)
        assert content.text == f"<!doctype html><title>{server}</title>"
        # CSP, permissions, domain and border arrive as the upstream gave them.
        assert (content.meta or {})["ui"] == {
            "csp": {
                "connectDomains": ["https://api.example.com"],
                "resourceDomains": ["https://cdn.example.com"],
            },
            "permissions": {"clipboardWrite": {}},
            "domain": f"{server}.apps.example.com",
            "prefersBorder": True,
        }
        for key in UI_KEYS:
            assert by_old_keys[(server, key)] == reads[server]
    # Parity: apart from the URIs, the tool and the read are the direct ones.
    assert {k: v for k, v in normalise(tools["map__show"]).items() if k not in ("name", "_meta")} == {
        k: v for k, v in normalise(direct_tool).items() if k not in ("name", "_meta")
    }
    [direct_content] = direct_read.contents
    assert normalise(reads["map"].contents[0]) == {**normalise(direct_content), "uri": exposed("map", UI)}


@pytest.mark.parametrize("mode", MODES)
async def test_a_ui_a_tool_result_names_or_embeds_reads_back(mode: str) -> None:
    """MCP-UI style: a result embeds the app (`ui://` embedded resource) and names it in its `_meta`."""
    server = app_server("clock")

    @server.tool()
    def embed() -> types.CallToolResult:
        app = types.TextResourceContents(
            uri=UI, mime_type=APP_MIME_TYPE, text="<p>inline</p>", _meta={"ui": {"prefersBorder": True}}
        )
        return types.CallToolResult(
            content=[types.EmbeddedResource(type="resource", resource=app)],
            _meta={
                "openai/outputTemplate": UI,
                "ui": {"resourceUri": UI},
                "vendor/keep": "ui://app/main.html",
            },
        )

    async with (
        served(registry({"clock": {}}), {"clock": server}, audit=None) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        result = await client.call_tool("clock__embed", {})
        [embedded] = result.content
        assert isinstance(embedded, types.EmbeddedResource)
        named = await client.read_resource((result.meta or {})["openai/outputTemplate"])
        inline = await client.read_resource(str(embedded.resource.uri))
    uri = exposed("clock", UI)
    assert str(embedded.resource.uri) == uri
    assert embedded.resource.mime_type == APP_MIME_TYPE
    assert embedded.resource.meta == {"ui": {"prefersBorder": True}}
    # Only the keys that name a UI change; a server's own keys are its own.
    own = {k: v for k, v in (result.meta or {}).items() if not k.startswith("io.modelcontextprotocol/")}
    assert own == {"openai/outputTemplate": uri, "ui": {"resourceUri": uri}, "vendor/keep": UI}
    assert named == inline
    assert str(named.contents[0].uri) == uri


@pytest.mark.parametrize("mode", MODES)
async def test_ui_templates_stay_ui_and_route_to_their_server(mode: str) -> None:
    upstreams = {"clock": app_server("clock"), "map": app_server("map")}
    async with (
        served(registry({"clock": {}, "map": {}}), upstreams, audit=None) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        templates = sorted(
            t.uri_template for t in (await client.list_resource_templates()).resource_templates
        )
        gauge = await client.read_resource("ui://map/widgets/gauge.html")
    assert templates == ["ui://clock/widgets/{kind}.html", "ui://map/widgets/{kind}.html"]
    [content] = gauge.contents
    assert str(content.uri) == "ui://map/widgets/gauge.html"
    assert isinstance(content, types.TextResourceContents)
    assert content.text == "<!doctype html><title>map gauge</title>"
    assert content.mime_type == APP_MIME_TYPE
    assert (content.meta or {})["ui"] == {"prefersBorder": False}


@pytest.mark.parametrize(
    "uri",
    [
        "ui://app/main.html",  # the upstream's own URI: not what the gateway serves
        "ui://clock/app/other.html",  # under a server's prefix, but neither listed nor templated
        "ui://nobody/app/main.html",  # no such server
        "mcpgw://clock/ui://app/main.html",  # the generic form: a ui:// URI has exactly one exposed form
        "ui://clock/../map/app/main.html",
    ],
)
async def test_a_ui_uri_the_catalog_does_not_serve_is_unknown(uri: str) -> None:
    upstreams = {"clock": app_server("clock"), "map": app_server("map")}
    async with (
        served(registry({"clock": {}, "map": {}}), upstreams, audit=None) as gateway,
        gateway_client(gateway) as client,
    ):
        with pytest.raises(MCPError, match="Unknown resource"):
            await client.read_resource(uri)


async def test_a_ui_uri_two_servers_would_expose_is_served_by_the_first_and_reported() -> None:
    """An unprefixed server's own `ui://clock/...` and `clock`'s `ui://...`: one route, one problem."""
    upstreams = {"solo": app_server("solo", shows="ui://clock/app/main.html"), "clock": app_server("clock")}
    config = registry({"solo": {"namespace": ""}, "clock": {}})
    async with served(config, upstreams, audit=None) as gateway, gateway_client(gateway) as client:
        read = await client.read_resource("ui://clock/app/main.html")
        problems = [str(p) for p in gateway.catalog.problems]
    [content] = read.contents
    assert isinstance(content, types.TextResourceContents)
    assert content.text == "<!doctype html><title>solo ui://clock/app/main.html</title>"
    assert problems == [
        "clock: resource 'ui://app/main.html': URI is already served by solo "
        "(fix: give [servers.clock] a namespace)"
    ]


async def test_an_unprefixed_server_keeps_its_ui_uris() -> None:
    server = app_server("solo")
    async with (
        served(registry({"solo": {"namespace": ""}}), {"solo": server}, audit=None) as gateway,
        gateway_client(gateway) as through,
        direct_client_of(server) as direct,
    ):
        tool_g, tool_d = (await through.list_tools()).tools[0], (await direct.list_tools()).tools[0]
        read_g, read_d = await through.read_resource(UI), await direct.read_resource(UI)
    assert normalise(tool_g) == normalise(tool_d)
    assert normalise(read_g) == normalise(read_d)


async def test_the_gateway_declares_the_apps_extension() -> None:
    upstreams = {"clock": app_server("clock")}
    async with (
        served(registry({"clock": {}}), upstreams, audit=None) as gateway,
        gateway_client(gateway) as through,
        direct_client_of(upstreams["clock"]) as direct,
    ):
        assert direct.server_capabilities.extensions == {EXTENSION_ID: {}}
        assert through.server_capabilities.extensions == {EXTENSION_ID: {}}
    # Even with no upstream declaring it: mcpgw itself carries MCP Apps.
    async with (
        served(registry({"plain": {}}), {"plain": MCPServer("plain")}, audit=None) as gateway,
        gateway_client(gateway) as through,
    ):
        assert through.server_capabilities.extensions == {EXTENSION_ID: {}}


async def test_handshake_clients_get_the_capabilities_a_direct_connection_gives() -> None:
    """The 2025-11-25 schema has no `extensions`: the SDK leaves it out, directly and through mcpgw."""
    upstreams = {"clock": app_server("clock")}
    async with (
        served(registry({"clock": {}}), upstreams, audit=None) as gateway,
        gateway_client(gateway, mode="legacy") as through,
        direct_client_of(upstreams["clock"], "legacy") as direct,
    ):
        assert through.server_capabilities.extensions == direct.server_capabilities.extensions


async def test_a_pin_is_of_the_upstreams_ui_uris_not_the_gateways(tmp_path: Path) -> None:
    """Rewriting `_meta` for the gateway does not break a pin; changing it upstream does."""
    registry_path = tmp_path / "servers.toml"
    registry_path.write_text(tomlkit.dumps({"gateway": {"mode": "production"}}))
    config = registry({"clock": {}}, gateway={"mode": "production"})
    async with served(registry({"clock": {}}), {"clock": app_server("clock")}, audit=None) as gateway:
        lists = {kind: list(items) for kind, items in gateway.upstreams["clock"].lists.items()}
    pins.write_lock(tmp_path / "servers.lock", {"clock": pins.snapshot(lists)})

    async with (
        served(config, {"clock": app_server("clock")}, audit=None, registry_path=registry_path) as gateway,
        gateway_client(gateway) as client,
    ):
        [tool] = (await client.list_tools()).tools
        templates = (await client.list_resource_templates()).resource_templates
    assert tool.name == "clock__show"
    assert ui_meta(tool)["ui"]["resourceUri"] == "ui://clock/app/main.html"
    assert [t.uri_template for t in templates] == ["ui://clock/widgets/{kind}.html"]

    moved = app_server("clock", shows="ui://app/evil.html")
    async with (
        served(config, {"clock": moved}, audit=None, registry_path=registry_path) as gateway,
        gateway_client(gateway) as client,
    ):
        assert (await client.list_tools()).tools == []
        assert "differs from its pin" in gateway.catalog.withheld["clock__show"]


@pytest.mark.parametrize(
    "meta",
    [
        {"ui": "ui://app/main.html"},  # `ui` not an object
        {"ui": {"resourceUri": 5, "visibility": "app"}},  # a URI that is not a string
        {"ui/resourceUri": ["ui://app/main.html"], "openai/outputTemplate": {"uri": "ui://app/main.html"}},
        {
            "ui": {"csp": {"connectDomains": ["ui://not-a-uri-key"]}}
        },  # nested: CSP is the app's, not a URI key
    ],
)
async def test_ui_meta_of_an_unexpected_shape_arrives_as_sent(meta: dict[str, Any]) -> None:
    """Nothing is lost or invented: only string URIs under the keys that name a UI are rewritten."""

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[types.Tool(name="odd", input_schema={"type": "object"}, _meta=meta)]
        )

    upstream: Server[Any] = Server("odd", on_list_tools=list_tools)
    async with (
        served(registry({"odd": {}}), {"odd": upstream}, audit=None) as gateway,
        gateway_client(gateway) as client,
    ):
        [tool] = (await client.list_tools()).tools
    assert tool.meta == meta
