"""The `sampling` data rules on every way a sampling or elicitation request leaves mcpgw, in memory.

An upstream asks its client for a completion (`ask`) or for input (`confirm`),
with a secret (an e-mail address) in what it asks. The request leaves mcpgw one
of five ways: to a model; relayed to a handshake-era client, from an upstream
of either era; handed to a 2026-07-28 client as an `input_required` result,
from an upstream of either era. On each, a `block` rule stops it before
anything is sent, and a `redact` rule sends it redacted.

The gateway runs in memory (`build_gateway(in_process=...)`) with two in-process
upstreams of the same server, pinned to one era each: `new` (2026-07-28) and
`old` (handshake). Clients are real mcp clients of `build_server(gateway)` in
memory; the model is the stand-in `tests/servers/llm.py`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import parity
from conftest import StandIn
from mcpgw.assembly import build_gateway
from mcpgw.audit.step import Outcome
from mcpgw.config import validate
from mcpgw.core.gateway import Gateway
from mcpgw.server.handlers import build_server

pytestmark = pytest.mark.anyio

KEY_VAR = "MCPGW_TEST_LLM_KEY"
SECRET = "jane.doe@example.com"
TEXT = f"write to {SECRET}"
REDACTED = "write to [REDACTED:email]"
TEXT_ARGS: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}}
TOOLS = [
    {"name": "ask", "description": "Asks the client's model about `text`", "inputSchema": TEXT_ARGS},
    {"name": "confirm", "description": "Asks the user about `text`", "inputSchema": TEXT_ARGS},
]
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
BLOCKED = "blocked by a data rule: email found"


def _text(value: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": json.dumps(value)}]}


def upstream() -> Server[Any]:
    """One server, either era: `ask` asks for a completion of `text`, `confirm` asks the user `text`."""

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> dict[str, Any]:
        text = str((params.arguments or {}).get("text", ""))
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        answers = params.input_responses or {}
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))
        if params.name == "ask":
            if not modern:
                sampled = await ctx.session.create_message(
                    [message], max_tokens=20, related_request_id=ctx.request_id
                )
                return _text(sampled.content.text)  # type: ignore[union-attr]
            llm = answers.get("llm")
            if not isinstance(llm, types.CreateMessageResult):
                request = types.CreateMessageRequest(
                    params=types.CreateMessageRequestParams(messages=[message], max_tokens=20)
                )
                return asking({"llm": request})
            return _text(llm.content.text)  # type: ignore[union-attr]
        if params.name == "confirm":
            if not modern:
                answer = await ctx.session.elicit(text, SCHEMA, related_request_id=ctx.request_id)  # type: ignore[arg-type]
                return _text(answer.content)
            reply = answers.get("user")
            if not isinstance(reply, types.ElicitResult):
                form = types.ElicitRequestFormParams.model_validate(
                    {"message": text, "requestedSchema": SCHEMA}
                )
                return asking({"user": types.ElicitRequest(params=form)})
            return _text(reply.content)
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")

    async def list_tools(ctx: ServerRequestContext[Any, Any], params: Any) -> dict[str, Any]:
        return {"tools": TOOLS}

    return parity.raw_tools_server("asking", list_tools=list_tools, call_tool=call_tool)


def asking(requests: dict[str, Any]) -> dict[str, Any]:
    required = types.InputRequiredResult(input_requests=requests, request_state="asked")
    return required.model_dump(by_alias=True, mode="json", exclude_none=True)


@pytest.fixture
async def gateway(llm: StandIn, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv(KEY_VAR, "sk-test")
    llm.clear()
    registry = validate(
        {
            "servers": {
                "new": {"command": "unused", "era": "stateless"},
                "old": {"command": "unused", "era": "handshake"},
            },
            "personas": {name: {} for name in ("block", "redact", "block-llm", "redact-llm")},
            "sampling": {
                "policy": "relay",
                "elicitation": "relay",
                "routes": {
                    "main": llm.route("good", key_env=KEY_VAR),
                },
                "personas": {"block-llm": {"policy": "llm"}, "redact-llm": {"policy": "llm"}},
            },
            "security": {
                "rules": [
                    {
                        "personas": ["block", "block-llm"],
                        "detectors": ["email"],
                        "directions": ["sampling"],
                        "action": "block",
                    },
                    {
                        "personas": ["redact", "redact-llm"],
                        "detectors": ["email"],
                        "directions": ["sampling"],
                        "action": "redact",
                    },
                ]
            },
        },
        source="test",
    )
    built = build_gateway(registry, audit=None, in_process={"new": upstream(), "old": upstream()})
    async with built.gateway.running() as running:
        await running.wait_started()
        yield running


class Seen:
    """What reached the client's callbacks."""

    def __init__(self) -> None:
        self.sampling: list[str] = []
        self.elicitation: list[str] = []

    async def sample(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        content = params.messages[-1].content
        text = content.text if isinstance(content, types.TextContent) else "?"
        self.sampling.append(text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"client: {text}"), model="m"
        )

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicitation.append(params.message)
        return types.ElicitResult(action="accept", content={"ok": True})


@asynccontextmanager
async def client_of(gateway: Gateway, persona: str, era: str, seen: Seen) -> AsyncIterator[Client]:
    server, _ = build_server(gateway, persona=persona)
    mode = "legacy" if era == "handshake" else "2026-07-28"
    async with Client(
        server,
        mode=mode,
        sampling_callback=seen.sample,
        elicitation_callback=seen.elicit,  # type: ignore[arg-type]
    ) as client:
        yield client


async def outcome(client: Client, tool: str) -> str:
    """The tool's answer text, or the error it failed with."""
    try:
        result = await client.call_tool(tool, {"text": TEXT})
    except MCPError as exc:
        return exc.error.message
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    return first.text


SERVERS_AND_CLIENTS = [
    pytest.param(server, era, id=f"{server}-upstream-{era}-client")
    for server in ("new", "old")
    for era in ("handshake", "2026-07-28")
]


# --- sampling relayed to the client ---------------------------------------------------------------


@pytest.mark.parametrize(("server", "era"), SERVERS_AND_CLIENTS)
async def test_block_stops_a_sampling_request_on_its_way_to_the_client(
    gateway: Gateway, server: str, era: str
) -> None:
    seen = Seen()
    async with client_of(gateway, "block", era, seen) as client:
        answer = await outcome(client, f"{server}__ask")
    assert BLOCKED in answer
    assert seen.sampling == []  # nothing reached the client
    assert [r.outcome for r in gateway.sampler.records] == [Outcome.BLOCKED]


@pytest.mark.parametrize(("server", "era"), SERVERS_AND_CLIENTS)
async def test_redact_redacts_a_sampling_request_on_its_way_to_the_client(
    gateway: Gateway, server: str, era: str
) -> None:
    seen = Seen()
    async with client_of(gateway, "redact", era, seen) as client:
        answer = await outcome(client, f"{server}__ask")
    assert json.loads(answer) == f"client: {REDACTED}"
    assert seen.sampling == [REDACTED]
    assert [(r.outcome, r.answered_by) for r in gateway.sampler.records] == [(Outcome.OK, "client")]


# --- elicitation: the `sampling` direction covers what an upstream asks the client ----------------


@pytest.mark.parametrize(("server", "era"), SERVERS_AND_CLIENTS)
async def test_block_stops_an_elicitation_request_on_its_way_to_the_client(
    gateway: Gateway, server: str, era: str
) -> None:
    seen = Seen()
    async with client_of(gateway, "block", era, seen) as client:
        answer = await outcome(client, f"{server}__confirm")
    assert BLOCKED in answer
    assert seen.elicitation == []


@pytest.mark.parametrize(("server", "era"), SERVERS_AND_CLIENTS)
async def test_redact_redacts_an_elicitation_request_on_its_way_to_the_client(
    gateway: Gateway, server: str, era: str
) -> None:
    seen = Seen()
    async with client_of(gateway, "redact", era, seen) as client:
        answer = await outcome(client, f"{server}__confirm")
    assert json.loads(answer) == {"ok": True}
    assert seen.elicitation == [REDACTED]


# --- sampling answered by a model ------------------------------------------------------------------


@pytest.mark.parametrize("server", ["new", "old"])
async def test_block_stops_a_sampling_request_on_its_way_to_the_model(
    gateway: Gateway, llm: StandIn, server: str
) -> None:
    seen = Seen()
    async with client_of(gateway, "block-llm", "handshake", seen) as client:
        answer = await outcome(client, f"{server}__ask")
    assert BLOCKED in answer
    assert llm.requests() == [] and seen.sampling == []
    assert [r.outcome for r in gateway.sampler.records] == [Outcome.BLOCKED]


@pytest.mark.parametrize("server", ["new", "old"])
async def test_redact_redacts_a_sampling_request_on_its_way_to_the_model(
    gateway: Gateway, llm: StandIn, server: str
) -> None:
    seen = Seen()
    async with client_of(gateway, "redact-llm", "handshake", seen) as client:
        answer = await outcome(client, f"{server}__ask")
    assert json.loads(answer) == f"stand-in answer from good: {REDACTED}"
    assert SECRET not in json.dumps(llm.requests())
    assert [(r.outcome, r.answered_by) for r in gateway.sampler.records] == [(Outcome.OK, "llm")]


# --- prices --------------------------------------------------------------------------------------


async def test_a_routes_registry_prices_hold_whatever_else_names_its_model(
    llm: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm keeps custom prices in one map per process, keyed by model: a second Router naming the
    same model with other prices (a reload, a second gateway, a persona draft) must not change what
    the first route's calls cost."""
    from mcpgw.config.settings import SamplingSettings
    from mcpgw.sampling import Record
    from mcpgw.sampling.llm import Models

    monkeypatch.setenv("PRICED_TWICE_KEY", "k")

    def models(price: float | None) -> Models:
        route = llm.route("priced-twice", key_env="PRICED_TWICE_KEY")
        if price is not None:
            route |= {"input_cost_per_token": price, "output_cost_per_token": price}
        return Models(SamplingSettings.model_validate({"routes": {"main": route}}))

    message = {"messages": [{"role": "user", "content": {"type": "text", "text": "hello"}}], "maxTokens": 5}
    costs = []
    for price in (None, 0.001, None, 0.5, 0.001):
        record = Record(server="s", persona=None)
        await models(price).complete(["main"], message, record)
        tokens = record.input_tokens + record.output_tokens
        assert tokens > 0
        if price is not None:
            costs.append(record.cost_usd / tokens)
    assert costs == pytest.approx([0.001, 0.5, 0.001])
