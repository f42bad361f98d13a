"""Least privilege for every kind of name: personas decide by server identity, and a read must match
something listed, always. In memory: in-process upstreams that record what reaches them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from mcpgw.assembly import build_gateway
from mcpgw.config import validate
from mcpgw.server.handlers import build_server

pytestmark = pytest.mark.anyio


def upstream(label: str, seen: list[str]) -> Server[Any]:
    """One tool, one resource, one `{+path}` template and one prompt, all named after `label`."""

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[types.Tool(name=f"{label}_echo", input_schema={"type": "object"})]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        seen.append(f"call {params.name}")
        return types.CallToolResult(content=[types.TextContent(type="text", text=label)])

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(uri=f"{label}://note", name="note")])

    async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        template = types.ResourceTemplate(uri_template=f"{label}://docs/{{+path}}", name="docs")
        return types.ListResourceTemplatesResult(resource_templates=[template])

    async def read(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        seen.append(f"read {params.uri}")
        contents = [types.TextResourceContents(uri=str(params.uri), text=f"{label} secret")]
        return types.ReadResourceResult(contents=contents)

    async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[types.Prompt(name=f"{label}_brief")])

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        seen.append(f"prompt {params.name}")
        text = types.TextContent(type="text", text=label)
        return types.GetPromptResult(messages=[types.PromptMessage(role="user", content=text)])

    return Server(
        label,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


@asynccontextmanager
async def gateway(
    servers: dict[str, dict[str, Any]],
    personas: dict[str, Any],
    seen: list[str],
    *,
    persona: str | None = None,
) -> AsyncIterator[Client]:
    registry = validate(
        {"servers": {n: {"command": "in-process", **s} for n, s in servers.items()}, "personas": personas},
        source="test",
    )
    in_process = {name: upstream(name, seen) for name in servers}
    built = build_gateway(registry, audit=None, in_process=in_process).gateway
    async with built.running():
        await built.wait_started()
        server, _ = build_server(built, persona=persona)
        async with Client(server) as client:
            yield client


async def unknown(awaitable: Any) -> str:
    with pytest.raises(MCPError) as caught:
        await awaitable
    assert caught.value.error.code == -32602
    return caught.value.error.message


async def test_persona_escape_with_an_empty_namespace_is_closed() -> None:
    """Two servers share the empty namespace; a persona limited to one reaches nothing of the other."""
    seen: list[str] = []
    servers = {"tiny": {"namespace": ""}, "other": {"namespace": ""}}
    async with gateway(servers, {"limited": {"servers": ["tiny"]}}, seen, persona="limited") as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["tiny_echo"]
        assert [str(r.uri) for r in (await client.list_resources()).resources] == ["tiny://note"]
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["tiny://docs/{+path}"]
        assert [p.name for p in (await client.list_prompts()).prompts] == ["tiny_brief"]
        assert "Unknown tool: other_echo" in await unknown(client.call_tool("other_echo", {}))
        assert "Unknown resource" in await unknown(client.read_resource("other://note"))
        assert "Unknown resource" in await unknown(client.read_resource("other://docs/readme"))
        assert "Unknown prompt" in await unknown(client.get_prompt("other_brief"))
        assert (await client.call_tool("tiny_echo", {})).content[0].text == "tiny"  # type: ignore[union-attr]
    assert not [s for s in seen if "other" in s]


async def test_arbitrary_uris_under_a_server_prefix_are_not_forwarded() -> None:
    seen: list[str] = []
    async with gateway({"evil": {}}, {}, seen) as client:
        for uri in ("mcpgw://evil/file:///etc/passwd", "mcpgw://evil/evil://elsewhere"):
            assert await unknown(client.read_resource(uri)) == f"Unknown resource: {uri}"
        read = await client.read_resource("mcpgw://evil/evil://docs/guide/intro")
        assert read.contents[0].uri == "mcpgw://evil/evil://docs/guide/intro"
    assert seen == ["read evil://docs/guide/intro"]


async def test_template_matching_lets_no_traversal_through() -> None:
    seen: list[str] = []
    async with gateway({"public": {"namespace": ""}}, {}, seen) as client:
        for uri in (
            "public://docs/../secret://vault",
            "public://docs/%2e%2e/%2e%2e/secret",
            "public://docs/a/../../../etc/passwd",
            "secret://vault",
        ):
            assert "Unknown resource" in await unknown(client.read_resource(uri))
        await client.read_resource("public://docs/a/b.md")
    assert seen == ["read public://docs/a/b.md"]


async def test_a_persona_that_names_only_tools_sees_no_resources_or_prompts() -> None:
    seen: list[str] = []
    personas = {
        "default": {"allow": ["evil__evil_echo"]},
        "reader": {"allow": ["evil__evil_echo"], "resources": {"allow": ["mcpgw://evil/evil://note"]}},
    }
    async with gateway({"evil": {}}, personas, seen) as client:
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        assert "Unknown resource" in await unknown(client.read_resource("mcpgw://evil/evil://note"))
        assert "Unknown resource" in await unknown(client.read_resource("mcpgw://evil/evil://docs/x"))
        assert "Unknown prompt" in await unknown(client.get_prompt("evil__evil_brief"))
        assert (await client.call_tool("evil__evil_echo", {})).content[0].text == "evil"  # type: ignore[union-attr]
    async with gateway({"evil": {}}, personas, seen, persona="reader") as client:
        assert [str(r.uri) for r in (await client.list_resources()).resources] == ["mcpgw://evil/evil://note"]
        assert "secret" in (await client.read_resource("mcpgw://evil/evil://note")).contents[0].text  # type: ignore[union-attr]
        assert (await client.list_prompts()).prompts == []
    assert seen == ["call evil_echo", "read evil://note"]
