"""Sampling and elicitation through real gateways: upstreams ask, mcpgw answers through litellm or the client.

The model is the only stand-in: `tests/servers/llm.py`, an OpenAI-compatible
server on 127.0.0.1 that records every request, so "nothing was sent to the
model" is asserted on the model's side. Upstreams are real: server-everything
(handshake era, stdio) and `tests/servers/modern.py` (2026-07-28, stdio).

Importing litellm takes seconds, so most tests share one HTTP gateway whose
personas each carry one sampling set-up (`/personas/NAME/mcp`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import tomlkit
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import (
    LLM_PRICES,
    SERVERS,
    StandIn,
    background,
    free_port,
    gateway_stdio,
    mcpgw_command,
    run_mcpgw,
)
from mcpgw.audit.step import Outcome
from mcpgw.config import validate
from mcpgw.errors import SamplingError, SamplingFailed, SamplingRefused
from mcpgw.sampling import Sampler
from mcpgw.upstream.inflight import Caller

pytestmark = pytest.mark.anyio

MODERN = {"command": sys.executable, "args": [str(SERVERS / "modern.py")]}
KEY_VAR = "MCPGW_TEST_LLM_KEY"
UNSET_VAR = "MCPGW_TEST_UNSET_KEY"
SECRET = "sk-test-secret-4242"
PERSONAS = [
    "default",
    "failover",
    "slowpoke",
    "thrifty",
    "pricey",
    "denied",
    "relayer",
    "nokey",
    "guarded",
    "scrubbed",
    "retrier",
    "impatient",
    "cooler",
    "lockedout",
]


def route(llm: StandIn, model: str, **extra: Any) -> dict[str, Any]:
    return llm.route(model, key_env=KEY_VAR, **{**LLM_PRICES, **extra})


def write(path: Path, servers: dict[str, Any], sampling: dict[str, Any], **rest: Any) -> Path:
    doc: dict[str, Any] = {"servers": servers, "sampling": sampling, **rest}
    path.write_text(tomlkit.dumps(doc))
    return path


class Shared:
    """The module's gateway: its URL, its registry file and its audit database."""

    def __init__(self, url: str, config: Path, db: Path) -> None:
        self.url, self.config, self.db = url, config, db

    def persona(self, name: str) -> str:
        return f"{self.url}/personas/{name}/mcp"

    def rows(self, persona: str) -> list[dict[str, Any]]:
        return sampling_rows(self.db, persona)


@pytest.fixture(scope="module")
def shared(
    llm: StandIn, everything_js: str, node: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    home = tmp_path_factory.mktemp("shared")
    config = write(
        home / "servers.toml",
        {"everything": {"command": node, "args": [everything_js]}, "modern": MODERN},
        {
            "routes": {
                "main": route(llm, "good"),
                "fancy": route(llm, "fancy-model", hints=["smart"]),
                "agent": route(llm, "tools-model", intelligence=0.9),
                "broken": route(llm, "fail-500", retries=0),
                "slow": route(llm, "stall", retries=0),
                "nokey": route(llm, "good", api_key_env=UNSET_VAR),
                "flaky": route(llm, "flaky-500-1-retry"),  # fails once, then answers
                "quick": route(llm, "stall-quick", timeout=0.3, retries=0),
                "locked": route(llm, "flaky-401-1-locked"),  # a 401 makes litellm cool the route down
            },
            "fallbacks": ["main", "fancy"],
            "timeout": 2.5,
            "retries": 1,
            "elicitation": "relay",
            "personas": {
                "failover": {"routes": ["broken", "main"]},
                "slowpoke": {"routes": ["slow", "main"]},
                "thrifty": {"tokens_per_day": 10},
                "pricey": {"usd_per_day": 0.000001},
                "denied": {"policy": "deny"},
                "relayer": {"policy": "relay"},
                "nokey": {"routes": ["nokey", "broken"]},
                "retrier": {"routes": ["flaky"]},
                "impatient": {"routes": ["quick", "main"]},
                "cooler": {"routes": ["locked", "main"]},
                "lockedout": {"routes": ["locked"]},
            },
        },
        personas={name: {} for name in PERSONAS},
        security={
            "rules": [
                {
                    "personas": ["guarded"],
                    "detectors": ["email"],
                    "directions": ["sampling"],
                    "action": "block",
                },
                {
                    "personas": ["scrubbed"],
                    "detectors": ["email"],
                    "directions": ["sampling"],
                    "action": "redact",
                },
            ]
        },
    )
    db = home / "audit.db"
    port = free_port()
    command = mcpgw_command("serve", "--transport", "http", "--port", str(port), "--config", str(config))
    env = {"MCPGW_AUDIT_DB": str(db), KEY_VAR: SECRET}
    with background([*command, "--log-level", "warning"], port=port, env=env):
        yield Shared(f"http://127.0.0.1:{port}", config, db)


@pytest.fixture
def model(llm: StandIn) -> StandIn:
    llm.clear()
    return llm


def text_of(result: types.CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    return first.text


def sampling_rows(db: Path, persona: str | None = None) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        sql = "select * from events where kind = 'sampling'" + (" and persona = ?" if persona else "")
        rows = conn.execute(sql + " order by id", [persona] if persona else []).fetchall()
    return [{**dict(r), "detail": json.loads(r["result"])} for r in rows]


def all_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("select * from events order by id")]


async def call_error(client: Client, name: str, arguments: dict[str, Any]) -> str:
    try:
        result = await client.call_tool(name, arguments)
    except MCPError as exc:
        return exc.error.message
    assert result.is_error, f"{name} succeeded: {result}"
    return text_of(result)


async def wait_rows(shared: Shared, persona: str, count: int) -> list[dict[str, Any]]:
    """The audit writer commits in batches: wait (briefly) for the rows to land."""
    for _ in range(100):
        rows = shared.rows(persona)
        if len(rows) >= count:
            return rows
        await anyio.sleep(0.05)
    return shared.rows(persona)


async def client_samples(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[-1].content
    text = prompt.text if isinstance(prompt, types.TextContent) else "?"
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"the client says: {text}"),
        model="client-llm",
    )


# --- both eras answered by the model, for clients that cannot sample ------------------------------


@pytest.mark.long
async def test_everything_sampling_is_answered_by_the_model(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("default"), mode="legacy", cache=None) as client:  # cannot sample
        tools = {t.name for t in (await client.list_tools()).tools}
        # server-everything registers it only for clients that declare sampling: mcpgw did.
        assert "everything__trigger-sampling-request" in tools
        result = await client.call_tool(
            "everything__trigger-sampling-request", {"prompt": "hi", "maxTokens": 33}
        )
    text = text_of(result)
    assert "stand-in answer from good: Resource trigger-sampling-request context: hi" in text
    assert '"role": "assistant"' in text
    [sent] = model.requests()
    assert sent["messages"][0] == {"role": "system", "content": "You are a helpful test server."}
    assert sent["max_tokens"] == 33 and sent["temperature"] == 0.7
    assert SECRET not in json.dumps(sent)  # the key travels in a header, never in the body
    [row] = [r for r in await wait_rows(shared, "default", 1) if r["server"] == "everything"]
    assert row["name"] == "main" and row["outcome"] == "ok"
    for _ in range(100):  # the call's own row is written once the call has finished
        calls = [
            r for r in all_rows(shared.db) if r["request_id"] == row["request_id"] and r["kind"] == "call"
        ]
        if calls:
            break
        await anyio.sleep(0.05)
    assert [c["name"] for c in calls] == ["everything__trigger-sampling-request"]  # the row names its call
    assert row["detail"]["tried"] == ["main"] and row["detail"]["input_tokens"] > 0
    assert row["detail"]["cost_usd"] > 0
    # The spend is also in columns of its own, for SQL (stats, Datasette): the same numbers.
    spend = (row["input_tokens"], row["output_tokens"], row["cost_usd"])
    assert spend == (row["detail"]["input_tokens"], row["detail"]["output_tokens"], row["detail"]["cost_usd"])


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_modern_upstream_sampling_hints_priorities_and_tools(
    shared: Shared, model: StandIn, mode: str
) -> None:
    async with Client(shared.persona("default"), mode=mode, cache=None) as client:  # cannot sample
        summary = await client.call_tool("modern__summarize", {"text": "the long text"})
        assert text_of(summary) == "stand-in answer from good: the long text"
        # A model hint picks the route whose hints match; priorities pick the best-scored route.
        hinted = await client.call_tool("modern__summarize", {"text": "t2", "hint": "smart"})
        assert text_of(hinted) == "stand-in answer from fancy-model: t2"
        agent = await client.call_tool("modern__weather_agent", {"city": "Paris"})
        # prompts/get asks for sampling the same way.
        poem = await client.get_prompt("modern__poem", {"topic": "rain"})
        assert poem.messages[0].content == types.TextContent(
            type="text", text="stand-in answer from good: rain"
        )
    answer = json.loads(text_of(agent))
    assert answer["stopReason"] == "toolUse"
    assert answer["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    sent = model.requests()
    assert [s["model"] for s in sent] == ["good", "fancy-model", "tools-model", "good"]
    # includeContext "thisServer": what mcpgw knows of that upstream joins the system prompt.
    system = sent[0]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Summarize in one line.\n\n")
    assert "MCP server modern (tools: summarize, weather_agent, confirm)" in system["content"]
    assert sent[0]["max_tokens"] == 50
    assert sent[2]["stop"] == ["END"] and sent[2]["temperature"] == 0.1
    assert sent[2]["tool_choice"] == "required"
    assert sent[2]["tools"][0]["function"]["name"] == "get_weather"


async def test_data_rules_apply_to_what_goes_to_the_model(shared: Shared, model: StandIn) -> None:
    text = "write to jane.doe@example.com"
    async with Client(shared.persona("guarded"), mode="legacy", cache=None) as client:
        message = await call_error(client, "modern__summarize", {"text": text})
    assert "blocked by a data rule: email" in message
    assert model.requests() == []  # nothing reached the model
    [blocked] = await wait_rows(shared, "guarded", 1)
    assert blocked["outcome"] == "blocked"
    async with Client(shared.persona("scrubbed"), mode="legacy", cache=None) as client:
        result = await client.call_tool("modern__summarize", {"text": text})
    assert text_of(result) == "stand-in answer from good: write to [REDACTED:email]"
    assert "jane.doe" not in json.dumps(model.requests())


# --- failover, budgets, keys ----------------------------------------------------------------------


async def test_failover_on_500_and_on_timeout(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("failover"), mode="legacy", cache=None) as client:
        result = await client.call_tool("modern__summarize", {"text": "failover"})
    assert text_of(result) == "stand-in answer from good: failover"
    async with Client(shared.persona("slowpoke"), mode="legacy", cache=None) as client:
        result = await client.call_tool("modern__summarize", {"text": "stalled"})
    assert text_of(result) == "stand-in answer from good: stalled"
    assert [s["model"] for s in model.requests()] == ["fail-500", "good", "stall", "good"]
    [failed_over] = await wait_rows(shared, "failover", 1)
    assert failed_over["name"] == "main" and failed_over["detail"]["tried"] == ["broken", "main"]
    [timed_out] = await wait_rows(shared, "slowpoke", 1)
    assert timed_out["name"] == "main" and timed_out["detail"]["tried"] == ["slow", "main"]
    assert 2400 < timed_out["latency_ms"] < 10_000  # waited out the 2.5 s timeout, then answered


async def test_route_timeout_overrides_the_global_one(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("impatient"), mode="legacy", cache=None) as client:
        result = await client.call_tool("modern__summarize", {"text": "hurry"})
    assert text_of(result) == "stand-in answer from good: hurry"
    assert [s["model"] for s in model.requests()] == ["stall-quick", "good"]
    [row] = await wait_rows(shared, "impatient", 1)
    assert row["name"] == "main" and row["detail"]["tried"] == ["quick", "main"]
    # The route's 0.3 s timeout, not the global 2.5 s (nor the model's 4 s stall), decided. The
    # first sampling call of a gateway also waits for litellm to load: that part is `load_ms`.
    assert row["latency_ms"] - row["detail"]["load_ms"] < 2000


async def test_the_gateway_keeps_serving_while_litellm_loads(
    llm: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first sampling call imports litellm (seconds): other calls must not wait for it."""
    tiny = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
    config = write(
        tmp_path / "servers.toml", {"modern": MODERN, "tiny": tiny}, {"routes": {"main": route(llm, "good")}}
    )
    monkeypatch.setenv("MCPGW_AUDIT_DB", str(tmp_path / "audit.db"))
    monkeypatch.setenv(KEY_VAR, SECRET)
    echoes: list[float] = []
    sampled = anyio.Event()
    async with gateway_stdio(config, mode="legacy") as client:

        async def sample() -> None:
            result = await client.call_tool("modern__summarize", {"text": "first"})
            assert text_of(result) == "stand-in answer from good: first"
            sampled.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            while not sampled.is_set():
                started = time.perf_counter()
                result = await client.call_tool("tiny__echo", {"message": "still here"})
                echoes.append(time.perf_counter() - started)
                assert text_of(result) == "still here"
    [row] = sampling_rows(tmp_path / "audit.db", "default")
    load = row["detail"]["load_ms"] / 1000
    assert load > 0.2  # a cold gateway did load litellm during this call
    # Echo calls went on meanwhile, each far quicker than the load (it used to stall them all).
    assert len(echoes) >= 3 and max(echoes) < load / 2, (echoes, load)


async def test_a_route_failing_once_is_retried_and_the_row_says_so(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("retrier"), mode="legacy", cache=None) as client:
        result = await client.call_tool("modern__summarize", {"text": "again please"})
    assert text_of(result) == "stand-in answer from flaky-500-1-retry: again please"
    assert [s["model"] for s in model.requests()] == ["flaky-500-1-retry"] * 2  # a 500, then the answer
    [row] = await wait_rows(shared, "retrier", 1)
    assert row["outcome"] == "ok" and row["name"] == "flaky"
    assert row["detail"]["tried"] == ["flaky"] and row["detail"]["retries"] == 1


async def test_a_route_in_cooldown_is_named_in_the_error_and_the_log(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("cooler"), mode="legacy", cache=None) as client:
        first = await client.call_tool("modern__summarize", {"text": "one"})  # 401, then main answers
        second = await client.call_tool("modern__summarize", {"text": "two"})
    assert text_of(first) == "stand-in answer from good: one"
    assert text_of(second) == "stand-in answer from good: two"
    # The model behind `locked` would answer now, but litellm skips the route: nothing was sent to it.
    assert [s["model"] for s in model.requests()] == ["flaky-401-1-locked", "good", "good"]
    rows = await wait_rows(shared, "cooler", 2)
    assert [r["detail"]["cooling"] for r in rows] == [[], ["locked"]]
    async with Client(shared.persona("lockedout"), mode="legacy", cache=None) as client:
        message = await call_error(client, "modern__summarize", {"text": "three"})
    assert "route 'locked' is cooling down after a failure (HTTP 401)" in message
    assert re.search(r"litellm skips it for (2\d|30)s more \(\[sampling\] cooldown\)", message)
    assert "No deployments available" not in message
    assert len(model.requests()) == 3


async def test_budget_refuses_before_sending_and_survives_a_restart(
    shared: Shared, model: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Client(shared.persona("thrifty"), mode="legacy", cache=None) as client:
        await client.call_tool("modern__summarize", {"text": "spend it all"})
        assert len(model.requests()) == 1
        message = await call_error(client, "modern__summarize", {"text": "one more"})
    assert "persona 'thrifty' has used its sampling budget for today" in message
    assert "of 10 tokens" in message
    assert len(model.requests()) == 1  # nothing more reached the model
    rows = await wait_rows(shared, "thrifty", 2)
    assert [r["outcome"] for r in rows] == ["ok", "refused"]
    found = run_mcpgw(
        *("logs", "--config", str(shared.config), "--outcome", "refused", "--persona", "thrifty", "--json"),
        env={"MCPGW_AUDIT_DB": str(shared.db)},
    )
    assert found.returncode == 0, found.stderr
    assert [json.loads(line)["kind"] for line in found.stdout.splitlines()] == ["sampling"]
    # A new gateway on the same audit log knows what the persona spent today.
    config = tmp_path / "servers.toml"
    doc = tomlkit.parse(shared.config.read_text())
    doc["servers"] = {"modern": MODERN}
    config.write_text(tomlkit.dumps(doc))
    monkeypatch.setenv("MCPGW_AUDIT_DB", str(shared.db))
    monkeypatch.setenv(KEY_VAR, SECRET)
    async with gateway_stdio(config, mode="legacy", extra=("--persona", "thrifty")) as client:
        message = await call_error(client, "modern__summarize", {"text": "after restart"})
    assert "persona 'thrifty' has used its sampling budget for today" in message
    assert len(model.requests()) == 1


async def test_money_budget_refuses_once_spent(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("pricey"), mode="legacy", cache=None) as client:
        await client.call_tool("modern__summarize", {"text": "costs more than a micro-dollar"})
        message = await call_error(client, "modern__summarize", {"text": "again"})
    assert "persona 'pricey' has used its sampling budget for today ($0.000" in message
    assert "of $0.000001); it renews at 00:00 UTC" in message
    assert len(model.requests()) == 1


def budgeted_sampler(llm: StandIn, **personas: dict[str, Any]) -> Sampler:
    """A sampler in memory whose routes reach the stand-in model: `main` answers, `broken` fails."""
    registry = validate(
        {
            "servers": {"up": {"command": "true"}},
            "personas": {name: {} for name in personas},
            "sampling": {
                "routes": {"main": route(llm, "good"), "broken": route(llm, "fail-500", retries=0)},
                "personas": personas,
            },
        },
        source="test",
    )
    return Sampler(registry)


HELLO = {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 8}
"""The stand-in reports 8 prompt tokens and 7 completion tokens for it: 15; mcpgw reserves 8 + 8."""


async def concurrently(sampler: Sampler, persona: str, count: int) -> list[dict[str, Any] | Exception]:
    """`count` sampling requests of `persona` at once: each one's answer or error, in order."""
    outcomes: list[dict[str, Any] | Exception] = [RuntimeError("not run")] * count

    async def one(index: int) -> None:
        try:
            outcomes[index] = await sampler.sample("up", dict(HELLO), Caller(persona=persona))
        except SamplingError as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(one, index)
    return outcomes


async def test_concurrent_requests_cannot_overspend_the_budget(
    llm: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve requests at once under 50 tokens a day: each reserves 16 before it is sent, so three fit."""
    monkeypatch.setenv(KEY_VAR, SECRET)
    llm.clear()
    sampler = budgeted_sampler(llm, tight={"routes": ["main"], "tokens_per_day": 50})
    outcomes = await concurrently(sampler, "tight", 12)
    answered = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, SamplingRefused)]
    assert len(answered) == 3 and len(refused) == 9, outcomes
    for exc in refused:
        message = str(exc)
        assert "persona 'tight' has used its sampling budget for today (0 of 50 tokens" in message
        assert "48 more held by 3 request(s) in flight, and this request may use up to 16 tokens" in message
    assert len(llm.requests()) == 3  # the refused ones sent nothing
    used = [r.input_tokens + r.output_tokens for r in sampler.records if r.outcome == Outcome.OK]
    assert used == [15, 15, 15] and sum(used) <= 50
    # Settled with what the model reported (45): a request alone may still start while 5 are left,
    # which is the documented slack (one request's use); after it, nothing more is sent.
    await sampler.sample("up", dict(HELLO), Caller(persona="tight"))
    with pytest.raises(SamplingRefused, match=r"\(60 of 50 tokens\); it renews at 00:00 UTC"):
        await sampler.sample("up", dict(HELLO), Caller(persona="tight"))
    assert len(llm.requests()) == 4


async def test_concurrent_requests_cannot_overspend_the_dollar_budget(
    llm: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dollars are reserved at the route's prices: 8 x $0.000001 in + 8 x $0.000002 out = $0.000024."""
    monkeypatch.setenv(KEY_VAR, SECRET)
    llm.clear()
    sampler = budgeted_sampler(llm, frugal={"routes": ["main"], "usd_per_day": 0.00005})
    outcomes = await concurrently(sampler, "frugal", 12)
    refused = [str(o) for o in outcomes if isinstance(o, SamplingRefused)]
    assert len(refused) == 10, outcomes
    assert all("($0.000000 of $0.000050, $0.000048 more held by 2 request(s)" in m for m in refused), refused
    spent = sum(r.cost_usd for r in sampler.records if r.outcome == Outcome.OK)
    assert 0 < spent <= 0.00005


async def test_a_failed_request_releases_its_reservation(
    llm: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)
    llm.clear()
    sampler = budgeted_sampler(llm, shaky={"routes": ["broken"], "tokens_per_day": 100})
    for _ in range(2):  # six reservations of 16 fit in 100: a round's holds must be gone for the next
        outcomes = await concurrently(sampler, "shaky", 6)
        assert all(isinstance(o, SamplingFailed) for o in outcomes), outcomes
    assert len(llm.requests()) == 12


async def test_missing_key_variable_is_named_never_the_key(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("nokey"), mode="legacy", cache=None) as client:
        message = await call_error(client, "modern__summarize", {"text": "x"})
    assert f"route 'nokey': environment variable {UNSET_VAR} is not set" in message
    assert "every sampling route failed (tried broken)" in message  # the next route was still tried
    assert SECRET not in message
    assert [s["model"] for s in model.requests()] == ["fail-500"]
    [row] = await wait_rows(shared, "nokey", 1)
    assert row["outcome"] == "error" and row["detail"]["tried"] == ["nokey", "broken"]
    assert SECRET not in shared.db.read_bytes().decode("utf-8", "replace")


# --- policy: deny and relay -----------------------------------------------------------------------


async def test_deny_refuses_and_sends_nothing(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("denied"), mode="legacy", cache=None) as client:
        message = await call_error(client, "modern__summarize", {"text": "x"})
        assert "sampling for upstream 'modern' is denied by [sampling] policy" in message
        message = await call_error(client, "everything__trigger-sampling-request", {"prompt": "x"})
        assert "denied by [sampling] policy" in message
    assert model.requests() == []


async def test_relay_asks_the_client_in_either_era(shared: Shared, model: StandIn) -> None:
    async with Client(
        shared.persona("relayer"), mode="legacy", cache=None, sampling_callback=client_samples
    ) as client:
        result = await client.call_tool("everything__trigger-sampling-request", {"prompt": "relay me"})
        assert "the client says: Resource trigger-sampling-request context: relay me" in text_of(result)
        assert "client-llm" in text_of(result)
        # 2026-07-28 upstream, handshake client: mcpgw turns the input request into a request to the client.
        result = await client.call_tool("modern__summarize", {"text": "modern relay"})
        assert text_of(result) == "the client says: modern relay"
    async with Client(
        shared.persona("relayer"), mode="auto", cache=None, sampling_callback=client_samples
    ) as client:
        # 2026-07-28 on both sides: the input_required result travels to the client, which answers it.
        result = await client.call_tool("modern__summarize", {"text": "passed through"})
        assert text_of(result) == "the client says: passed through"
        # Handshake-era upstream, 2026-07-28 client: mcpgw answers the call with input_required,
        # keeps the upstream waiting, and hands it the client's answer from the retry.
        result = await client.call_tool("everything__trigger-sampling-request", {"prompt": "via results"})
        assert "the client says: Resource trigger-sampling-request context: via results" in text_of(result)
    assert model.requests() == []
    # One row per request, however it reached the client (the one passed through: when handed over).
    rows = await wait_rows(shared, "relayer", 4)
    assert [r["detail"]["answered_by"] for r in rows] == ["client", "client", "client", "client"]


async def test_relay_to_a_client_that_cannot_sample_is_a_clear_error(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("relayer"), mode="legacy", cache=None) as client:
        message = await call_error(client, "modern__summarize", {"text": "x"})
    assert "set to relay, and this client cannot sample" in message
    assert model.requests() == []


async def test_elicitation_is_relayed_or_refused(shared: Shared) -> None:
    async def answer(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"ok": True})

    async def decline(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    url = shared.persona("default")
    async with Client(url, mode="legacy", cache=None, elicitation_callback=answer) as client:
        result = await client.call_tool("modern__confirm", {"question": "sure?"})
        assert json.loads(text_of(result)) == {"action": "accept", "content": {"ok": True}}
    async with Client(url, mode="legacy", cache=None, elicitation_callback=decline) as client:
        # server-everything (handshake era) offers this tool because mcpgw declared elicitation.
        result = await client.call_tool("everything__trigger-elicitation-request", {})
        texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
        assert any("declined" in text for text in texts), texts
    async with Client(url, mode="auto", cache=None, elicitation_callback=decline) as client:
        # The same upstream request reaches a 2026-07-28 client as an input_required result.
        result = await client.call_tool("everything__trigger-elicitation-request", {})
        texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
        assert any("declined" in text for text in texts), texts
    async with Client(url, mode="legacy", cache=None) as client:
        message = await call_error(client, "modern__confirm", {"question": "sure?"})
        assert "this client cannot answer elicitation requests" in message
        message = await call_error(client, "everything__trigger-elicitation-request", {})
        assert "this client cannot answer elicitation requests" in message


# --- configuration and reporting ------------------------------------------------------------------


async def test_server_deny_hides_sampling_from_that_upstream(
    tmp_path: Path, everything_js: str, node: str
) -> None:
    config = write(
        tmp_path / "servers.toml",
        {"everything": {"command": node, "args": [everything_js]}},
        {"servers": {"everything": {"policy": "deny"}}, "elicitation": "deny"},
    )
    async with gateway_stdio(config, mode="legacy") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
    assert "everything__echo" in tools
    assert "everything__trigger-sampling-request" not in tools  # no sampling capability declared
    assert "everything__trigger-elicitation-request" not in tools


def test_unknown_route_stops_the_start(tmp_path: Path) -> None:
    config = write(
        tmp_path / "servers.toml",
        {"modern": MODERN},
        {"routes": {"main": {"model": "openai/x"}}, "personas": {"default": {"routes": ["main", "nope"]}}},
    )
    done = run_mcpgw("serve", "--config", str(config))
    assert done.returncode == 2
    assert "sampling.personas" in done.stderr
    assert "names route 'nope', which is not in [sampling.routes] (known: main)" in done.stderr


async def test_stats_shows_spend_per_persona_and_route(shared: Shared, model: StandIn) -> None:
    async with Client(shared.persona("failover"), mode="legacy", cache=None) as client:
        await client.call_tool("modern__summarize", {"text": "for the stats"})
    await wait_rows(shared, "failover", 1)
    done = run_mcpgw(
        "stats", "--config", str(shared.config), "--json", env={"MCPGW_AUDIT_DB": str(shared.db)}
    )
    assert done.returncode == 0, done.stderr
    spend = json.loads(done.stdout)["sampling"]
    by_route = {row["key"]: row for row in spend["route"]}
    by_persona = {row["key"]: row for row in spend["persona"]}
    assert by_route["main"]["requests"] >= 1 and by_route["main"]["cost_usd"] > 0
    assert by_persona["failover"]["tokens"] > 0 and by_persona["failover"]["cost_usd"] > 0
    table = run_mcpgw(
        "stats", "--config", str(shared.config), env={"MCPGW_AUDIT_DB": str(shared.db), "COLUMNS": "200"}
    )
    assert "sampling per persona" in table.stdout and "sampling per route" in table.stdout


async def test_sampling_during_calls_of_two_personas_is_refused_not_misbilled() -> None:
    from mcpgw import config as config_mod
    from mcpgw.errors import SamplingRefused
    from mcpgw.sampling import Sampler
    from mcpgw.upstream.inflight import Caller

    registry = config_mod.validate(
        {
            "servers": {"up": {"command": "true"}},
            "personas": {"a": {}, "b": {}},
            "sampling": {"routes": {"main": {"model": "openai/x"}}},
        },
        source="test",
    )
    sampler = Sampler(registry)
    with (
        sampler.inflight.calling("up", Caller(persona="a")),
        sampler.inflight.calling("up", Caller(persona="b")),
        pytest.raises(SamplingRefused, match="calls from several personas were in flight"),
    ):
        await sampler.on_sampling("up", {"messages": [], "maxTokens": 5})
    assert [(r.persona, r.outcome) for r in sampler.records] == [(None, "refused")]


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ({"timeout": 0}, "timeout: Input should be greater than 0"),
        ({"retries": 11}, "retries: Input should be less than or equal to 10"),
        ({"retries": -1}, "retries: Input should be greater than or equal to 0"),
    ],
)
def test_bad_route_timeout_or_retries_names_the_key(setting: dict[str, Any], reason: str) -> None:
    from mcpgw import config as config_mod
    from mcpgw.errors import ConfigError

    document = {
        "servers": {"up": {"command": "true"}},
        "sampling": {"routes": {"main": {"model": "openai/x", **setting}}},
    }
    with pytest.raises(ConfigError) as caught:
        config_mod.validate(document, source="servers.toml")
    assert f"servers.toml: sampling.routes.main.{reason}" in str(caught.value)
