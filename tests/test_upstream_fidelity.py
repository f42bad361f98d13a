"""What a client connected directly gets from an upstream, it gets through mcpgw's default configuration too.

Each test is a case the official conformance suite's reference server showed
mcpgw getting wrong (issue 15), reproduced on its own:
- a 2026-07-28 result without `resultType` (the reference omits it on its
  stateless `tools/call`) is `complete`, not "an invalid tools/call result";
- a handshake-era upstream may ask the calling client to sample or elicit:
  mcpgw declares both without any `[sampling]` settings;
- progress a handshake-era upstream reports while a 2026-07-28 client answers
  its elicitation reaches that client;
- a 2026-07-28 upstream is told the calling client's capabilities, so it can
  refuse with -32021 what that client cannot answer (as the spec requires);
- an unknown resource's error names the URI in `data` (SEP-2164).

In memory (tests/parity.py), except where the wire is the point (a missing
`resultType`): there the gateway, still in memory, reaches the conformance
fixture over HTTP.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

import parity
from conftest import SERVERS, background, free_port
from mcpgw.config import validate

pytestmark = pytest.mark.anyio


# --- a missing resultType ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_url() -> Iterator[str]:
    port = free_port()
    with background([sys.executable, str(SERVERS / "conformance.py"), "--http", str(port)], port=port):
        yield f"http://127.0.0.1:{port}/mcp"


def test_the_fixture_omits_result_type_as_the_reference_does(fixture_url: str) -> None:
    """The premise of the next test: on the wire, the 2026-07-28 result has no `resultType`."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "test_simple_text", "arguments": {}, "_meta": meta},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "test_simple_text",
    }
    reply = httpx.post(fixture_url, json=body, headers=headers, timeout=30)
    text = reply.text
    payload = text[text.index("{") :].splitlines()[0] if "data:" in text else text
    result = httpx.Response(200, content=payload).json()["result"]
    assert "resultType" not in result
    assert result["content"][0]["text"] == "This is a simple text response for testing."


@pytest.mark.parametrize("mode", parity.MODES)
async def test_a_result_without_result_type_is_complete(fixture_url: str, mode: str) -> None:
    config = validate({"servers": {"fixture": {"url": fixture_url, "namespace": ""}}}, source="test")
    async with (
        parity.served(config, {}, audit=None) as gateway,
        parity.gateway_client(gateway, mode=mode) as client,
    ):
        assert gateway.upstreams["fixture"].era == "stateless"
        result = await client.call_tool("test_simple_text", {})
    assert not result.is_error
    assert result.content[0].text == "This is a simple text response for testing."  # type: ignore[union-attr]


# --- an upstream that asks the client ---------------------------------------------------------


class Answer(BaseModel):
    answer: str


def asking_upstream() -> MCPServer:
    server = MCPServer("asking")

    @server.tool()
    async def ask_model(ctx: Context) -> str:
        """Asks the client's model to say hello."""
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text="say hello"))
        reply = await ctx.session.create_message([message], max_tokens=10)
        return f"model said: {reply.content.text}"  # type: ignore[union-attr]

    @server.tool()
    async def ask_user(ctx: Context) -> str:
        """Reports progress, asks the user a question, reports progress again."""
        await ctx.report_progress(1, 2)
        answer = await ctx.elicit("What is the answer?", Answer)
        await ctx.report_progress(2, 2)
        return f"user said: {answer.data.answer if answer.action == 'accept' else answer.action}"  # type: ignore[union-attr]

    return server


async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="hello"), model="stand-in"
    )


async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"answer": "42"})


@pytest.fixture
async def handshake_gateway() -> AsyncIterator[Any]:
    """mcpgw with no `[sampling]` section in front of a handshake-era upstream that asks its client."""
    config = parity.registry({"up": {"era": "handshake"}})
    async with parity.served(config, {"up": asking_upstream()}, audit=None) as gateway:
        yield gateway


@pytest.mark.parametrize("mode", parity.MODES)
async def test_a_handshake_upstream_may_ask_a_client_that_can_answer(
    handshake_gateway: Any, mode: str
) -> None:
    async with parity.gateway_client(
        handshake_gateway, mode=mode, sampling_callback=sample, elicitation_callback=elicit
    ) as client:
        sampled = await client.call_tool("up__ask_model", {})
        elicited = await client.call_tool("up__ask_user", {})
    assert sampled.content[0].text == "model said: hello", sampled  # type: ignore[union-attr]
    assert elicited.content[0].text == "user said: 42", elicited  # type: ignore[union-attr]


async def test_deny_still_declares_nothing_and_the_upstream_cannot_ask() -> None:
    config = parity.registry({"up": {"era": "handshake"}}, sampling={"policy": "deny", "elicitation": "deny"})
    async with (
        parity.served(config, {"up": asking_upstream()}, audit=None) as gateway,
        parity.gateway_client(
            gateway, mode="legacy", sampling_callback=sample, elicitation_callback=elicit
        ) as client,
    ):
        # The upstream's SDK refuses to ask a client that declared nothing: the call fails there.
        for tool in ("up__ask_model", "up__ask_user"):
            with pytest.raises(MCPError, match="not supported"):
                await client.call_tool(tool, {})


async def test_progress_reaches_a_2026_client_while_it_answers_an_elicitation(handshake_gateway: Any) -> None:
    """The handshake-era upstream's call runs on while the 2026-07-28 client answers in a retry:
    its progress goes to whichever of the client's requests is waiting then."""
    seen: list[float] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    async with parity.gateway_client(handshake_gateway, mode="auto", elicitation_callback=elicit) as client:
        result = await client.call_tool("up__ask_user", {}, progress_callback=progress)
    assert result.content[0].text == "user said: 42", result  # type: ignore[union-attr]
    assert seen == [1.0, 2.0]


# --- the caller's capabilities ----------------------------------------------------------------


def judging_upstream() -> MCPServer:
    server = MCPServer("judging")

    @server.tool()
    async def needs_sampling(ctx: Context) -> str:
        """Refuses, as the spec asks, a caller that has not declared sampling."""
        caps = ctx.session.client_capabilities
        if caps is None or caps.sampling is None:
            raise MCPError(
                code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="MissingRequiredClientCapabilityError",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "sampling declared"

    return server


@pytest.mark.parametrize("can_sample", [False, True])
async def test_a_2026_upstream_judges_the_callers_capabilities(can_sample: bool) -> None:
    upstream = judging_upstream()
    callbacks: dict[str, Any] = {"sampling_callback": sample} if can_sample else {}
    outcomes: list[Any] = []
    async with parity.served(
        parity.registry({"up": {"era": "stateless"}}), {"up": upstream}, audit=None
    ) as gateway:
        for client in (
            Client(upstream, mode="auto", cache=None, **callbacks),
            parity.gateway_client(gateway, mode="auto", **callbacks),
        ):
            async with client as connected:
                name = "needs_sampling" if len(outcomes) == 0 else "up__needs_sampling"
                try:
                    result = await connected.call_tool(name, {})
                    outcomes.append(result.content[0].text)  # type: ignore[union-attr]
                except MCPError as exc:
                    outcomes.append((exc.error.code, exc.error.data))
    expected: Any = (
        "sampling declared"
        if can_sample
        else (types.MISSING_REQUIRED_CLIENT_CAPABILITY, {"requiredCapabilities": {"sampling": {}}})
    )
    assert outcomes == [expected, expected]


# --- an unknown resource ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", parity.MODES)
async def test_an_unknown_resource_is_named_in_the_errors_data(mode: str) -> None:
    async with parity.both(mode) as (_, gateway):
        with pytest.raises(MCPError) as caught:
            await gateway.read_resource("mcpgw://up/test://missing")
    assert caught.value.error.code == types.INVALID_PARAMS
    assert caught.value.error.data == {"uri": "mcpgw://up/test://missing"}


# --- an upstream with resources and no resource templates ------------------------------------------


def resources_without_templates(*, failing: bool) -> Server[Any]:
    """A handshake-era upstream with one resource and no `resources/templates/list`, which it answers
    "Method not found" (as the SDK's lowlevel server does when given no handler for it, and published
    servers such as mcp-server-sqlite do); or, `failing`, one whose templates list fails otherwise."""
    upstream: Server[Any] = Server("notemplates")

    async def list_resources(ctx: Any, params: Any) -> dict[str, Any]:
        return {"resources": [{"uri": "test://note", "name": "note"}]}

    async def broken(ctx: Any, params: Any) -> dict[str, Any]:
        raise MCPError(code=types.INTERNAL_ERROR, message="the template index is down")

    upstream.add_request_handler("resources/list", types.PaginatedRequestParams, list_resources)
    if failing:
        upstream.add_request_handler("resources/templates/list", types.PaginatedRequestParams, broken)
    return upstream


@pytest.mark.parametrize("failing", [False, True], ids=["not-implemented", "failing"])
async def test_an_upstream_without_resource_templates_is_served_without_a_warning(
    failing: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Its resource is listed and it lists no templates, as directly. Not implementing the templates
    list is no fault to warn of at every start; a templates list that fails is, and its line says why."""
    caplog.set_level(logging.DEBUG, logger="mcpgw.upstream")
    config = parity.registry({"up": {"era": "handshake"}})
    async with (
        parity.served(config, {"up": resources_without_templates(failing=failing)}, audit=None) as gateway,
        parity.gateway_client(gateway) as client,
    ):
        assert len((await client.list_resources()).resources) == 1
        assert (await client.list_resource_templates()).resource_templates == []
    about = [
        (r.levelno, r.getMessage()) for r in caplog.records if "resources/templates/list" in r.getMessage()
    ]
    if failing:
        assert len(about) == 1 and about[0][0] == logging.WARNING, about
        assert "the template index is down" in about[0][1]
    else:  # said, for whoever looks at debug level, and only there
        assert len(about) == 1 and about[0][0] == logging.DEBUG, about
        assert "Method not found" in about[0][1]


@pytest.mark.parametrize(("count", "said"), [(1, "1 tool)"), (2, "2 tools)")])
async def test_an_upstream_ready_line_counts_its_tools_in_words(
    count: int, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`upstream fetch ready (stdio, protocol 2026-07-28, 1 tool)`: mcp-server-fetch has one tool."""
    caplog.set_level(logging.INFO, logger="mcpgw.upstream")
    upstream = MCPServer("counted")
    for i in range(count):
        upstream.add_tool(lambda: "ok", name=f"t{i}", description="A tool.")
    async with parity.served(parity.registry({"up": {}}), {"up": upstream}, audit=None):
        pass
    ready = [r.getMessage() for r in caplog.records if "upstream up ready" in r.getMessage()]
    assert len(ready) == 1 and ready[0].endswith(said), ready
