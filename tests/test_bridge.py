"""Attacks on the era bridge, in memory: what a client may put in `inputResponses` and `requestState`.

A 2026-07-28 client retries a call with answers (`inputResponses`) and the
state mcpgw handed it (`requestState`). The client is not trusted with either:
it may answer only the requests mcpgw put to it, never the roots mcpgw answers
from the registry, and only with a state mcpgw sealed for it, for this call,
once. Each test is named after the attack it stops.

The gateway runs in memory (`build_gateway(in_process=...)`) with two in-process
upstreams of the same server, pinned to one era each by the registry: `new`
(2026-07-28: asks with `input_required`) and `old` (handshake: sends mcpgw
requests, which reach a 2026-07-28 client through an exchange). Clients are
real mcp clients of `build_server(gateway)` in memory, one per persona.
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
from mcpgw.assembly import build_gateway
from mcpgw.config import validate
from mcpgw.core.gateway import Gateway
from mcpgw.errors import InvalidRequest
from mcpgw.server.handlers import build_server
from mcpgw.upstream.inflight import ClientChannel

pytestmark = pytest.mark.anyio

REGISTRY_ROOTS = ["file:///srv/data"]
EVIL_ROOTS = types.ListRootsResult(roots=[types.Root(uri="file:///")])
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}
TOOLS = [
    {"name": "roots", "description": "The client's roots", "inputSchema": NO_ARGS},
    {
        "name": "roots_and_sample",
        "description": "The client's roots and a sampled line",
        "inputSchema": NO_ARGS,
    },
    {"name": "seen", "description": "Asks for a sample; says what answers it got", "inputSchema": NO_ARGS},
]
HI = types.SamplingMessage(role="user", content=types.TextContent(type="text", text="hi"))


def sampled(text: str) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=text), model="m"
    )


def asking(requests: dict[str, Any], state: str) -> dict[str, Any]:
    required = types.InputRequiredResult(input_requests=requests, request_state=state)
    return required.model_dump(by_alias=True, mode="json", exclude_none=True)


def _text(value: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": json.dumps(value)}]}


def upstream() -> Server[Any]:
    """One server, either era: `roots`, `roots_and_sample` and `seen` ask the client mid-call."""

    async def list_tools(ctx: ServerRequestContext[Any, Any], params: Any) -> dict[str, Any]:
        return {"tools": TOOLS}

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> dict[str, Any]:
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        answers = params.input_responses or {}
        roots_asked = {"roots": types.ListRootsRequest()}
        sampling = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[HI], max_tokens=5)
        )
        if params.name == "roots":
            if not modern:
                return _text([str(r.uri) for r in (await ctx.session.list_roots()).roots])
            roots = answers.get("roots")
            if not isinstance(roots, types.ListRootsResult):
                return asking(roots_asked, "roots-asked")
            return _text([str(r.uri) for r in roots.roots])
        if params.name == "roots_and_sample":
            if not modern:
                listed = (await ctx.session.list_roots()).roots
                answer = await ctx.session.create_message(
                    [HI], max_tokens=5, related_request_id=ctx.request_id
                )
                return _text({"roots": [str(r.uri) for r in listed], "sampled": answer.content.text})  # type: ignore[union-attr]
            roots, llm = answers.get("roots"), answers.get("llm")
            if not isinstance(roots, types.ListRootsResult) or not isinstance(llm, types.CreateMessageResult):
                return asking({**roots_asked, "llm": sampling}, "both-asked")
            return _text({"roots": [str(r.uri) for r in roots.roots], "sampled": llm.content.text})  # type: ignore[union-attr]
        if params.name == "seen":
            if not modern:
                answer = await ctx.session.create_message(
                    [HI], max_tokens=5, related_request_id=ctx.request_id
                )
                return _text({"sampled": answer.content.text})  # type: ignore[union-attr]
            if "llm" not in answers:
                return asking({"llm": sampling}, "seen-asked")
            return _text({"keys": sorted(answers), "state": params.request_state})
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")

    return parity.raw_tools_server("asking", list_tools=list_tools, call_tool=call_tool)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    registry = validate(
        {
            "servers": {
                "new": {"command": "unused", "era": "stateless", "roots": ["/srv/data"]},
                "old": {"command": "unused", "era": "handshake", "roots": ["/srv/data"]},
            },
            "personas": {"a": {}, "b": {}},
            # The client answers sampling itself, in either upstream era.
            "sampling": {"policy": "relay"},
        },
        source="test",
    )
    built = build_gateway(registry, audit=None, in_process={"new": upstream(), "old": upstream()})
    async with built.gateway.running() as running:
        await running.wait_started()
        yield running


async def never_called(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    raise AssertionError("the tests answer input requests themselves; the callback declares the capability")


@asynccontextmanager
async def client_of(gateway: Gateway, persona: str = "a") -> AsyncIterator[Client]:
    server, _ = build_server(gateway, persona=persona)
    async with Client(server, mode="2026-07-28", sampling_callback=never_called) as client:
        yield client


async def call(
    client: Client,
    tool: str,
    arguments: dict[str, Any] | None = None,
    *,
    responses: dict[str, Any] | None = None,
    state: str | None = None,
) -> types.CallToolResult | types.InputRequiredResult:
    result = await client.session.call_tool(
        tool,
        arguments or {},
        input_responses=responses,
        request_state=state,
        allow_input_required=True,
        allow_claimed=False,
    )
    assert isinstance(result, types.CallToolResult | types.InputRequiredResult), result
    return result


def seen(server: str) -> dict[str, Any]:
    """What `seen` returns once answered "x": the answers the upstream got, or (handshake era) the sample."""
    return {"sampled": "x"} if server == "old" else {"keys": ["llm"], "state": "seen-asked"}


def answer_of(result: types.CallToolResult | types.InputRequiredResult) -> Any:
    assert isinstance(result, types.CallToolResult), result
    assert not result.is_error, result
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def asked(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> tuple[str, str]:
    """Call `tool`, which asks the client for one sample: the key it is asked under, and the state."""
    first = await call(client, tool, arguments)
    assert isinstance(first, types.InputRequiredResult), first
    assert first.input_requests is not None and first.request_state is not None
    (key,) = first.input_requests
    return key, first.request_state


async def refused(client: Client, tool: str, **kwargs: Any) -> str:
    with pytest.raises(MCPError) as caught:
        await call(client, tool, **kwargs)
    return caught.value.error.message


# --- (a) roots injection: the roots are mcpgw's to answer, never the client's ---------------------


async def test_roots_injection_on_a_first_call_does_not_replace_the_registry_roots(gateway: Gateway) -> None:
    async with client_of(gateway) as client:
        assert answer_of(await call(client, "new__roots", responses={"roots": EVIL_ROOTS})) == REGISTRY_ROOTS


async def test_roots_injection_on_a_retry_does_not_replace_the_registry_roots(gateway: Gateway) -> None:
    async with client_of(gateway) as client:
        key, state = await asked(client, "new__roots_and_sample")
        assert key == "llm", "the roots request stays with mcpgw"
        done = await call(
            client, "new__roots_and_sample", responses={"llm": sampled("x"), "roots": EVIL_ROOTS}, state=state
        )
        assert answer_of(done) == {"roots": REGISTRY_ROOTS, "sampled": "x"}


# --- (b) forged, replayed, or someone else's requestState --------------------------------------


@pytest.mark.parametrize("server", ["new", "old"])
async def test_forged_request_state_is_refused(gateway: Gateway, server: str) -> None:
    async with client_of(gateway) as client:
        key, state = await asked(client, f"{server}__seen")
        forged = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
        for fake in (forged, "mcpgw-" + "0" * 32, "seen-asked"):
            message = await refused(client, f"{server}__seen", responses={key: sampled("x")}, state=fake)
            assert "requestState was altered" in message
        # The real state is still good, once.
        done = await call(client, f"{server}__seen", responses={key: sampled("x")}, state=state)
        assert answer_of(done) == seen(server)


@pytest.mark.parametrize("server", ["new", "old"])
async def test_replayed_request_state_is_refused(gateway: Gateway, server: str) -> None:
    async with client_of(gateway) as client:
        key, state = await asked(client, f"{server}__seen")
        done = await call(client, f"{server}__seen", responses={key: sampled("x")}, state=state)
        assert answer_of(done) == seen(server)
        message = await refused(client, f"{server}__seen", responses={key: sampled("y")}, state=state)
        assert "requestState was already used" in message


@pytest.mark.parametrize("server", ["new", "old"])
async def test_request_state_of_another_persona_is_refused(gateway: Gateway, server: str) -> None:
    async with client_of(gateway, "a") as alice, client_of(gateway, "b") as bob:
        key, state = await asked(alice, f"{server}__seen")
        message = await refused(bob, f"{server}__seen", responses={key: sampled("stolen")}, state=state)
        assert "requestState was issued to a call of another persona" in message
        # Refused without being used up: its own caller still finishes the call.
        done = await call(alice, f"{server}__seen", responses={key: sampled("x")}, state=state)
        assert answer_of(done) == seen(server)


@pytest.mark.parametrize("server", ["new", "old"])
async def test_request_state_for_another_tool_or_arguments_is_refused(gateway: Gateway, server: str) -> None:
    async with client_of(gateway) as client:
        key, state = await asked(client, f"{server}__seen")
        responses = {key: sampled("x")}
        message = await refused(client, f"{server}__roots_and_sample", responses=responses, state=state)
        assert "requestState was issued for another call" in message
        message = await refused(
            client, f"{server}__seen", arguments={"x": 1}, responses=responses, state=state
        )
        assert "requestState was issued for another call" in message
        assert answer_of(await call(client, f"{server}__seen", responses=responses, state=state)) == seen(
            server
        )


@pytest.mark.parametrize("server", ["new", "old"])
async def test_request_state_of_another_principal_is_refused(gateway: Gateway, server: str) -> None:
    """Over HTTP with `[auth]` the server hands the gateway each request's principal on its channel."""

    def channel(principal: str) -> ClientChannel:
        return ClientChannel(can_sample=True, modern=True, principal=principal)

    params = {"name": f"{server}__seen", "arguments": {}}
    first = await gateway.call_tool(params, persona="a", client=channel("sub=alice client_id=app"))
    assert first["resultType"] == "input_required"
    (key,) = first["inputRequests"]
    retry = {
        **params,
        "inputResponses": {key: sampled("x").model_dump(mode="json")},
        "requestState": first["requestState"],
    }
    with pytest.raises(InvalidRequest, match="requestState was issued to another principal"):
        await gateway.call_tool(retry, persona="a", client=channel("sub=mallory client_id=app"))
    done = await gateway.call_tool(retry, persona="a", client=channel("sub=alice client_id=app"))
    assert json.loads(done["content"][0]["text"]) == seen(server)


# --- (c) answers to requests mcpgw never sent ----------------------------------------------------


async def test_input_response_to_a_request_never_sent_is_not_passed_upstream(gateway: Gateway) -> None:
    async with client_of(gateway) as client:
        key, state = await asked(client, "new__seen")
        done = await call(
            client, "new__seen", responses={key: sampled("x"), "smuggled": sampled("y")}, state=state
        )
        # The upstream sees the one answer it asked for, and its own state back.
        assert answer_of(done) == seen("new")


async def test_input_responses_without_a_request_state_are_not_passed_upstream(gateway: Gateway) -> None:
    async with client_of(gateway) as client:
        first = await call(client, "new__seen", responses={"llm": sampled("unasked")})
        assert isinstance(first, types.InputRequiredResult), "the upstream asks, as it never got the answer"
