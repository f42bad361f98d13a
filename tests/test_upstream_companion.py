"""A handshake-era client of an upstream that speaks both eras gets the upstream's handshake-era side.

The upstream is the conformance fixture (tests/servers/conformance.py) in this process: like
the official reference server, it asks the client for sampling and elicitation on its handshake
path and answers "not supported" on its 2026-07-28 path. mcpgw talks 2026-07-28 to it; a
2025-11-25 client through mcpgw must be asked, as it is when connected directly
(`upstream.companion`), and a 2026-07-28 client must see what it sees directly.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client

from conftest import SERVERS, StandIn
from parity import gateway_client, registry, served

sys.path.insert(0, str(SERVERS))  # the fixture imports its sibling modules
import conformance

pytestmark = pytest.mark.anyio


async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="from the client"), model="client"
    )


async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})


CALLBACKS = {"sampling_callback": sample, "elicitation_callback": elicit}
CALLS = {
    "test_sampling": {"prompt": "hello"},
    "test_elicitation": {"message": "who are you?"},
}


async def texts(client: Client) -> dict[str, str]:
    answers: dict[str, str] = {}
    for tool, arguments in CALLS.items():
        result = await client.call_tool(tool, arguments)
        answers[tool] = result.content[0].text  # type: ignore[union-attr]
    return answers


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_each_client_era_gets_what_it_gets_directly(mode: str) -> None:
    upstream = conformance.build()
    async with Client(upstream, mode=mode, cache=None, **CALLBACKS) as direct:
        expected = await texts(direct)
    async with (
        served(registry({"ref": {"namespace": ""}}), {"ref": upstream}) as gateway,
        gateway_client(gateway, mode=mode, **CALLBACKS) as through,
    ):
        assert gateway.upstreams["ref"].era == "stateless"  # the shared session speaks 2026-07-28
        assert await texts(through) == expected
    if mode == "legacy":
        assert expected["test_sampling"] == "LLM response: from the client"
        assert expected["test_elicitation"].startswith("User response: action=accept")
    else:  # the reference's stateless path, as it is
        assert expected["test_sampling"].startswith("Sampling not supported")


async def test_a_model_route_answers_the_handshake_side_for_the_callers_persona(
    llm: StandIn, audit_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampling on the handshake-era session is the gateway's as on any other: the persona's policy
    (a model route here), its audit row charged to that persona and that server."""
    monkeypatch.setenv("FIDELITY_KEY", "sk-test")
    route = llm.route("good", key_env="FIDELITY_KEY")
    config = registry(
        {"ref": {"namespace": ""}},
        personas={"writer": {}},
        sampling={"routes": {"main": route}, "personas": {"writer": {"policy": "llm"}}},
    )
    async with (
        served(config, {"ref": conformance.build()}) as gateway,
        gateway_client(gateway, mode="legacy", persona="writer") as through,
    ):
        result = await through.call_tool("test_sampling", {"prompt": "hello"})
    assert result.content[0].text == "LLM response: stand-in answer from good: hello"  # type: ignore[union-attr]
    with sqlite3.connect(audit_db) as conn:
        rows = conn.execute("select persona, server from events where kind = 'sampling'").fetchall()
    assert rows == [("writer", "ref")]


async def test_a_2026_only_upstream_is_asked_for_its_handshake_side_once_and_serves_by_the_bridge() -> None:
    """`server/discover` lists no handshake versions, so mcpgw learns by asking: a server that refuses
    `initialize` is not asked again in its life, and its handshake-era callers keep the era bridge."""
    upstream = conformance.build("2026-07-28")
    initializes = 0

    async def count(ctx: Any, call_next: Any) -> Any:
        nonlocal initializes
        initializes += ctx.method == "initialize"
        return await call_next(ctx)

    upstream.middleware = [count, *upstream.middleware]
    async with (
        served(registry({"ref": {"namespace": ""}}), {"ref": upstream}) as gateway,
        gateway_client(gateway, mode="legacy") as through,
    ):
        for _ in range(3):
            result = await through.call_tool("test_simple_text", {})
            assert result.content[0].text == "This is a simple text response for testing."  # type: ignore[union-attr]
    assert initializes == 1
