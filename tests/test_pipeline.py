"""The forward pipeline: every request kind goes through the same stages, so a rule holds for all of them.

In memory: the upstream is an in-process lowlevel server that records what it
receives, the gateway is built by `build_gateway` and served to an mcp `Client`
without any process or socket.
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
from mcpgw.errors import DataBlocked
from mcpgw.server.handlers import build_server

pytestmark = pytest.mark.anyio

AWS = "AKIAIOSFODNN7EXAMPLE"
CARD = "4111 1111 1111 1111"


def recording_upstream(seen: list[tuple[str, Any]]) -> Server[Any]:
    """A prompt and a template whose completions echo what they were sent, and record it."""

    async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        return types.ListPromptsResult(
            prompts=[types.Prompt(name="brief", arguments=[types.PromptArgument(name="topic")])]
        )

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        seen.append(("prompt", params.arguments))
        topic = (params.arguments or {}).get("topic", "")
        text = types.TextContent(type="text", text=f"brief on {topic}")
        return types.GetPromptResult(messages=[types.PromptMessage(role="user", content=text)])

    async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        seen.append(("complete", params.argument.value))
        return types.CompleteResult(completion=types.Completion(values=[f"{params.argument.value} {CARD}"]))

    return Server(
        "recorder",
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
    )


@asynccontextmanager
async def through_gateway(upstream: Server[Any], rules: list[dict[str, Any]]) -> AsyncIterator[Client]:
    registry = validate(
        {"servers": {"rec": {"command": "in-process"}}, "security": {"rules": rules}}, source="test"
    )
    gateway = build_gateway(registry, audit=None, in_process={"rec": upstream}).gateway
    async with gateway.running():
        await gateway.wait_started()
        server, _ = build_server(gateway)
        async with Client(server) as client:
            yield client


async def test_a_block_rule_on_arguments_stops_a_prompt_get_before_the_upstream() -> None:
    seen: list[tuple[str, Any]] = []
    rules = [{"detectors": ["aws-key"], "directions": ["arguments"], "action": "block"}]
    async with through_gateway(recording_upstream(seen), rules) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("rec__brief", {"topic": f"keys {AWS}"})
        assert caught.value.error.code == DataBlocked.jsonrpc_code
        assert "aws-key found in the arguments of rec__brief" in caught.value.error.message
        ok = await client.get_prompt("rec__brief", {"topic": "weather"})
    assert [kind for kind, _ in seen] == ["prompt"]  # only the clean one reached the upstream
    assert ok.messages[0].content.text == "brief on weather"  # type: ignore[union-attr]


async def test_completions_pass_the_data_rules_both_ways() -> None:
    seen: list[tuple[str, Any]] = []
    rules = [
        {"detectors": ["aws-key"], "directions": ["arguments"], "action": "redact"},
        {"detectors": ["card"], "directions": ["results"], "action": "redact"},
    ]
    async with through_gateway(recording_upstream(seen), rules) as client:
        result = await client.complete(
            types.PromptReference(type="ref/prompt", name="rec__brief"),
            {"name": "topic", "value": f"k {AWS}"},
        )
    assert seen == [("complete", "k [REDACTED:aws-key]")]
    assert result.completion.values == ["k [REDACTED:aws-key] [REDACTED:card]"]
