"""The conformance fixture's checks through `mcpgw serve` over stdio, with our own mcp clients.

The official suite speaks only HTTP, so the stdio side of the gateway gets the
same checks here: the fixture server (tests/servers/conformance.py) behind
mcpgw with an empty namespace, a real client on the gateway's stdin/stdout, one
gateway per client era, every scenario's expectation asserted on what the
client receives.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from conftest import SERVERS, gateway_stdio

pytestmark = pytest.mark.anyio

FIXTURE = {"command": sys.executable, "args": [str(SERVERS / "conformance.py")], "namespace": ""}
PNG_MAGIC = b"\x89PNG"


def dumped(value: Any) -> Any:
    return value.model_dump(by_alias=True, mode="json", exclude_none=True)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_fixture_checks_through_mcpgw_over_stdio(mode: str, registry_file: Any) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    config = registry_file({"fixture": FIXTURE})
    async with gateway_stdio(config, mode=mode, logging_callback=on_log, log_level="info") as client:
        # tools-list and json-schema-2020-12: every tool described, 2020-12 keywords preserved.
        tools = {tool.name: dumped(tool) for tool in (await client.list_tools()).tools}
        assert "test_simple_text" in tools, "unprefixed names (namespace = '')"
        assert all(tool.get("description") for tool in tools.values())
        schema = tools["json_schema_2020_12_tool"]["inputSchema"]
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert "address" in schema["$defs"] and schema["additionalProperties"] is False

        # tools-call-*: each content type as the fixture made it.
        text = await client.call_tool("test_simple_text", {})
        assert dumped(text)["content"] == [
            {"type": "text", "text": "This is a simple text response for testing."}
        ]
        image = dumped(await client.call_tool("test_image_content", {}))["content"][0]
        assert image["type"] == "image" and image["mimeType"] == "image/png"
        assert base64.b64decode(image["data"]).startswith(PNG_MAGIC)
        audio = dumped(await client.call_tool("test_audio_content", {}))["content"][0]
        assert audio["type"] == "audio" and audio["mimeType"] == "audio/wav"
        embedded = dumped(await client.call_tool("test_embedded_resource", {}))["content"][0]
        assert embedded["resource"] == {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content.",
        }
        mixed = dumped(await client.call_tool("test_multiple_content_types", {}))["content"]
        assert [item["type"] for item in mixed] == ["text", "image", "resource"]
        assert json.loads(mixed[2]["resource"]["text"]) == {"test": "data", "value": 123}
        error = await client.call_tool("test_error_handling", {})
        assert error.is_error is True
        assert dumped(error)["content"][0]["text"] == "This tool intentionally returns an error for testing"

        # tools-call-with-progress: 0, 50, 100 of 100, in order, to the caller.
        progress: list[tuple[float, float | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total))

        await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        assert progress == [(0, 100), (50, 100), (100, 100)]

        # tools-call-with-logging and logging-set-level: three info lines to the caller, filtered by level.
        if mode == "legacy":
            await client.set_logging_level("info")
        await client.call_tool("test_tool_with_logging", {})
        with anyio.fail_after(60):
            while len(logs) < 3:
                await anyio.sleep(0.02)
        assert [(entry.level, entry.data) for entry in logs] == [
            ("info", "Tool execution started"),
            ("info", "Tool processing data"),
            ("info", "Tool execution completed"),
        ]
        if mode == "legacy":
            await client.set_logging_level("warning")
            await client.call_tool("test_tool_with_logging", {})
            await client.send_ping()  # anything relayed before the ping's answer has arrived by now
            assert len(logs) == 3, "info lines must not reach a client that asked for warning and above"

        # resources-*: text, binary, template.
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= listed
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        assert templates == ["test://template/{id}/data"]
        text_contents = dumped(await client.read_resource("test://static-text"))["contents"]
        assert text_contents == [
            {
                "uri": "test://static-text",
                "mimeType": "text/plain",
                "text": "This is the content of the static text resource.",
            }
        ]
        binary = dumped(await client.read_resource("test://static-binary"))["contents"][0]
        assert binary["mimeType"] == "image/png" and base64.b64decode(binary["blob"]).startswith(PNG_MAGIC)
        templated = dumped(await client.read_resource("test://template/123/data"))["contents"][0]
        assert json.loads(templated["text"]) == {
            "id": "123",
            "templateTest": True,
            "data": "Data for ID: 123",
        }

        # prompts-* and completion-complete.
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert all(p.description for p in prompts.values())
        simple = dumped(await client.get_prompt("test_simple_prompt"))["messages"]
        assert simple == [
            {"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}
        ]
        with_args = dumped(
            await client.get_prompt("test_prompt_with_arguments", {"arg1": "hello", "arg2": "world"})
        )
        assert (
            with_args["messages"][0]["content"]["text"] == "Prompt with arguments: arg1='hello', arg2='world'"
        )
        embedded_prompt = dumped(
            await client.get_prompt(
                "test_prompt_with_embedded_resource", {"resourceUri": "test://example-resource"}
            )
        )["messages"]
        assert embedded_prompt[0]["content"]["resource"]["uri"] == "test://example-resource"
        image_prompt = dumped(await client.get_prompt("test_prompt_with_image"))["messages"]
        assert image_prompt[0]["content"]["type"] == "image"
        completion = await client.complete(
            types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments"),
            {"name": "arg1", "value": "par"},
        )
        assert completion.completion.values == ["paris", "park", "party"]

        # An unknown name is a clear error, and the gateway keeps serving.
        with pytest.raises(MCPError) as caught:
            await client.call_tool("no_such_tool", {})
        assert "no_such_tool" in caught.value.error.message
        assert not (await client.call_tool("test_simple_text", {})).is_error


@pytest.mark.parametrize("upstream_era", ["2025-11-25", "2026-07-28"])
async def test_resource_updates_reach_the_subscriber_and_stop_after_unsubscribe(
    upstream_era: str, registry_file: Any
) -> None:
    """resources/subscribe through mcpgw: forwarded to a handshake upstream, a listen stream on a 2026 one."""
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))

    fixture = {**FIXTURE, "args": [*FIXTURE["args"], "--protocol", upstream_era]}
    config = registry_file({"fixture": fixture})
    async with gateway_stdio(config, mode="legacy", message_handler=on_message) as client:
        await client.subscribe_resource("test://watched-resource")
        await client.call_tool("era_touch", {})
        with anyio.fail_after(60):
            while not updated:
                await anyio.sleep(0.02)
        assert updated == ["test://watched-resource"]

        await client.unsubscribe_resource("test://watched-resource")
        await client.call_tool("era_touch", {})
        await anyio.sleep(0.3)
        await client.send_ping()
        assert updated == ["test://watched-resource"], "no news after unsubscribing"

        # A URI the upstream neither lists nor templates is refused by mcpgw, never forwarded.
        with pytest.raises(MCPError) as caught:
            await client.subscribe_resource("test://no-such-resource")
        assert caught.value.error.message == "Unknown resource: test://no-such-resource"
