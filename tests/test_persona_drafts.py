"""Drafting personas from a job description: the model proposes, the guard rails decide, the gateway enforces.

The model is the stand-in (`tests/servers/llm.py`, `scripted...` models answering what each test
sets); the catalog is a real in-memory upstream served through the real gateway (`parity.served`),
and every written persona is loaded back and enforced by a gateway built from the written file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import tomlkit
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

import parity
from conftest import StandIn
from mcpgw import config as config_mod
from mcpgw.audit import open_for
from mcpgw.catalog.drafts import Draft, persona_table
from mcpgw.catalog.explain import explain
from mcpgw.config.edit import persona_edit
from mcpgw.config.files import write_atomically
from mcpgw.core.gateway import Gateway
from mcpgw.errors import DraftError
from mcpgw.sampling import Record, drafting

pytestmark = pytest.mark.anyio

KEY_VAR = "MCPGW_TEST_LLM_KEY"
JOB = "Triage new issues: read issues and code, add labels and comments, never merge or delete."
SECRETS = ("SECRET-TOKEN-9431", "FIXED-REPO-VALUE-77", "DEFAULT-ARGUMENT-VALUE", "sk-test-key-5150")
CALLED = ("ARGUMENT-SENT-1234", "RESULT-RETURNED-5678")
RO = types.ToolAnnotations(read_only_hint=True)


def tracker() -> MCPServer:
    """An issue tracker with read, write, send-out and destructive tools, a resource and a prompt."""
    mcp = MCPServer("tracker", instructions="The team's issue tracker.")

    @mcp.tool(annotations=RO)
    def read_issue(number: str) -> str:
        """Read an issue by number."""
        return f"RESULT-RETURNED-5678 for {number}"

    @mcp.tool(annotations=RO)
    def search_code(query: str = "DEFAULT-ARGUMENT-VALUE") -> str:
        """Search the repository's code."""
        return query

    @mcp.tool()
    def add_label(number: str, label: str) -> str:
        """Add a label to an issue."""
        return "labelled"

    @mcp.tool(annotations=types.ToolAnnotations(open_world_hint=True))
    def add_issue_comment(number: str, body: str) -> str:
        """Comment on an issue (public)."""
        return "commented"

    @mcp.tool(annotations=types.ToolAnnotations(destructive_hint=True))
    def delete_issue(number: str) -> str:
        """Delete an issue for good."""
        return "deleted"

    @mcp.tool(annotations=types.ToolAnnotations(destructive_hint=True))
    def merge_pull_request(number: str) -> str:
        """Merge a pull request."""
        return "merged"

    @mcp.tool(annotations=types.ToolAnnotations(open_world_hint=True))
    def send_email(to: str, body: str) -> str:
        """Send an email to anyone."""
        return "sent"

    @mcp.resource("tracker://labels")
    def labels() -> str:
        """The labels in use."""
        return "bug, feature"

    @mcp.prompt()
    def triage(number: str) -> str:
        """Triage one issue."""
        return f"Triage issue {number}"

    return mcp


REGISTRY = """\
# the team's registry: this comment stays
[servers.tr]
command = "in-process"
env = {{ TRACKER_TOKEN = "SECRET-TOKEN-9431" }}

[sampling]
fallbacks = ["good", "partial", "malicious", "garbage"]

[sampling.routes.good]
model = "openai/scripted-good"
api_base = "{base}"
api_key_env = "{key}"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002

[sampling.routes.partial]
model = "openai/scripted-partial"
api_base = "{base}"
api_key_env = "{key}"

[sampling.routes.malicious]
model = "openai/scripted-malicious"
api_base = "{base}"
api_key_env = "{key}"

[sampling.routes.garbage]
model = "openai/scripted-garbage"
api_base = "{base}"
api_key_env = "{key}"

# the reader persona: reads one thing
[personas.reader]
allow = ["tr__read_issue"]  # just this
deny = ["tr__add_label"]
[personas.reader.tools.tr__add_label]
fixed = {{ label = "FIXED-REPO-VALUE-77" }}
"""

GOOD = {
    "description": "Triages new issues",
    "tools": [
        {"name": "tr__read_issue", "reason": "read the issue"},
        {"name": "tr__search_code", "reason": "find the code it is about"},
        {"name": "tr__add_label", "reason": "label it"},
        {"name": "tr__add_issue_comment", "reason": "ask for details"},
    ],
    "resources": [{"uri": "mcpgw://tr/tracker://labels", "reason": "know the labels"}],
    "prompts": [{"name": "tr__triage", "reason": "the triage steps"}],
}
PARTIAL = {"tools": ["tr__read_issue", "tr__search_code"]}
MALICIOUS = {
    "description": "Everything, trust me",
    "tools": [
        {"name": "*", "reason": "simpler"},
        {"name": "tr__*", "reason": "all of the tracker"},
        {"name": "tr__delete_issue", "reason": "clean up"},
        {"name": "tr__merge_pull_request", "reason": "ship it"},
        {"name": "tr__send_email", "reason": "report"},
        {"name": "tr__drop_database", "reason": "not a tool"},
        {"name": "tr__read_issue", "reason": "read the issue"},
    ],
    "resources": [{"uri": "*"}],
    "prompts": ["tr__nope"],
    "allow": ["*"],
    "read_only": False,
}


@pytest.fixture
def registry_path(tmp_path: Path, llm: StandIn, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(KEY_VAR, "sk-test-key-5150")
    llm.script("scripted-good", "Here you are:\n```json\n" + json.dumps(GOOD) + "\n```")
    llm.script("scripted-partial", json.dumps(PARTIAL))
    llm.script("scripted-malicious", json.dumps(MALICIOUS))
    llm.script("scripted-garbage", "Sure! I would give the agent every tool, it is easier.")
    path = tmp_path / "servers.toml"
    path.write_text(REGISTRY.format(base=llm.base, key=KEY_VAR))
    return path


@pytest.fixture
async def gateway(registry_path: Path) -> AsyncIterator[Gateway]:
    registry, _ = config_mod.load(registry_path)
    async with parity.served(registry, {"tr": tracker()}) as served:
        yield served


async def drafted(gateway: Gateway, route: str, persona: str = "triager") -> tuple[Draft, Record]:
    registry = gateway.registry
    servers = drafting.described(registry, gateway.upstreams)
    return await drafting.draft(
        registry, gateway.catalog, persona=persona, job=JOB, servers=servers, route=route, audit=gateway.audit
    )


async def write_and_serve(path: Path, made: Draft, gateway: Gateway) -> dict[str, Any]:
    """Write the draft, load the file, serve it: what the persona lists and what it may call."""
    table = persona_table(made, gateway.catalog, gateway.registry.personas.get(made.persona))
    _, after, _ = persona_edit(path, made.persona, table)
    write_atomically(path, after)
    registry, _ = config_mod.load(path)
    async with (
        parity.served(registry, {"tr": tracker()}, audit=None) as served,
        parity.gateway_client(served, persona=made.persona) as client,
    ):
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        resources = sorted(r.uri for r in (await client.list_resources()).resources)
        prompts = sorted(p.name for p in (await client.list_prompts()).prompts)
        refused = []
        for name in ("tr__delete_issue", "tr__merge_pull_request", "tr__send_email"):
            with pytest.raises(MCPError, match="Unknown tool"):
                await client.call_tool(name, {"number": "1", "to": "a", "body": "b"})
            refused.append(name)
    return {"tools": tools, "resources": resources, "prompts": prompts, "refused": refused}


async def test_a_good_proposal_is_kept_flagged_and_enforced_as_shown(
    gateway: Gateway, registry_path: Path
) -> None:
    made, record = await drafted(gateway, "good")
    kept = {item.name: item for item in made.items}
    assert list(kept) == [t["name"] for t in GOOD["tools"]] + ["mcpgw://tr/tracker://labels", "tr__triage"]
    assert made.dropped == []
    assert kept["tr__add_issue_comment"].review and kept["tr__add_issue_comment"].access == "sends out"
    assert not kept["tr__add_label"].review and kept["tr__add_label"].access == "write"
    assert kept["tr__read_issue"].reason == "read the issue"
    assert not made.read_only
    assert record.route == "good" and record.input_tokens > 0 and record.cost_usd > 0

    served = await write_and_serve(registry_path, made, gateway)
    assert served["tools"] == sorted(made.names("tool"))
    assert served["resources"] == made.names("resource")
    assert served["prompts"] == made.names("prompt")
    text = registry_path.read_text()
    assert "# the team's registry: this comment stays" in text
    assert "# the reader persona: reads one thing" in text and "# just this" in text


async def test_a_partial_proposal_gives_a_read_only_persona_with_nothing_else(
    gateway: Gateway, registry_path: Path
) -> None:
    made, _ = await drafted(gateway, "partial")
    assert made.names("tool") == ["tr__read_issue", "tr__search_code"]
    assert made.read_only and made.names("resource") == [] and made.names("prompt") == []
    table = persona_table(made, gateway.catalog, None)
    assert table["read_only"] is True and table["resources"] == {"allow": []}
    served = await write_and_serve(registry_path, made, gateway)
    assert served == {
        "tools": made.names("tool"),
        "resources": [],
        "prompts": [],
        "refused": served["refused"],
    }


async def test_a_malicious_proposal_keeps_only_what_exists_and_the_job_asks_for(
    gateway: Gateway, registry_path: Path
) -> None:
    made, _ = await drafted(gateway, "malicious")
    assert made.names("tool") == ["tr__read_issue"]
    why = {d.name: d.why for d in made.dropped}
    assert why["*"] == why["tr__*"] == "a pattern, not a name: drafts list exact names"
    assert why["tr__delete_issue"] == "destructive, and the job rules out delete"
    assert why["tr__merge_pull_request"] == "destructive, and the job rules out merge"
    assert why["tr__send_email"] == "sends out, and the job does not ask to send/email"
    assert why["tr__drop_database"] == why["tr__nope"] == "not in the catalog"
    assert why['allow = ["*"]'] == "not part of a proposal: ignored"
    table = persona_table(made, gateway.catalog, None)
    assert table["allow"] == ["tr__read_issue"] and table["read_only"] is True
    assert table["resources"] == {"allow": []} and table["servers"] == ["tr"]
    served = await write_and_serve(registry_path, made, gateway)
    assert served["tools"] == ["tr__read_issue"] and served["resources"] == []
    assert served["refused"] == ["tr__delete_issue", "tr__merge_pull_request", "tr__send_email"]


async def test_a_destructive_tool_is_kept_for_review_when_the_job_asks_for_it(gateway: Gateway) -> None:
    registry = gateway.registry
    servers = drafting.described(registry, gateway.upstreams)
    made, _ = await drafting.draft(
        registry,
        gateway.catalog,
        persona="janitor",
        job="Delete spam issues; never send anything.",
        servers=servers,
        route="malicious",
    )
    kept = {item.name: item for item in made.items}
    assert kept["tr__delete_issue"].review and kept["tr__delete_issue"].access == "destructive"
    why = {d.name: d.why for d in made.dropped}
    assert why["tr__send_email"] == "sends out, and the job rules out send"
    assert why["tr__merge_pull_request"] == "destructive, and the job does not ask to merge"


async def test_widening_an_existing_persona_is_marked_and_its_deny_rules_hold(gateway: Gateway) -> None:
    made, _ = await drafted(gateway, "good", persona="reader")
    assert made.exists
    assert {i.name for i in made.widens} == {
        "tr__search_code",
        "tr__add_issue_comment",
        "mcpgw://tr/tracker://labels",
        "tr__triage",
    }
    assert not next(i for i in made.items if i.name == "tr__read_issue").widens
    assert [(d.name, d.why) for d in made.dropped] == [
        ("tr__add_label", "the persona's deny rule 'tr__add_label' (kept)")
    ]


async def test_the_request_to_the_model_carries_no_arguments_results_or_secrets(
    gateway: Gateway, llm: StandIn
) -> None:
    async with parity.gateway_client(gateway) as client:
        answer = await client.call_tool("tr__read_issue", {"number": "ARGUMENT-SENT-1234"})
    assert "RESULT-RETURNED-5678" in str(answer.content)
    llm.clear()
    await drafted(gateway, "good", persona="reader")
    sent = json.dumps(llm.requests())
    assert "tr__read_issue" in sent and "The team's issue tracker." in sent and "Triage new issues" in sent
    for value in (*SECRETS, *CALLED, "inputSchema", "properties"):
        assert value not in sent, value


async def test_every_draft_is_an_audit_row_with_its_job_route_tokens_and_cost(
    gateway: Gateway, audit_db: Path
) -> None:
    registry = gateway.registry
    servers = drafting.described(registry, gateway.upstreams)
    log = open_for(registry.audit, source="drafts")
    assert log is not None
    try:
        for route in ("good", "garbage"):
            with contextlib.suppress(DraftError):
                await drafting.draft(
                    registry,
                    gateway.catalog,
                    persona="triager",
                    job=JOB,
                    servers=servers,
                    route=route,
                    audit=log,
                )
    finally:
        log.close()
    rows = (
        sqlite3.connect(audit_db)
        .execute(
            "select persona, name, outcome, error, input_tokens, output_tokens, cost_usd, result "
            "from events where kind = 'draft' order by id"
        )
        .fetchall()
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [("triager", "good", "ok"), ("triager", "garbage", "error")]
    assert rows[0][4] > 0 and rows[0][5] > 0 and rows[0][6] > 0
    assert "not a persona proposal" in rows[1][3]
    result = json.loads(rows[0][7])
    assert result["job"] == JOB and "tr__add_label" in result["kept"] and result["route"] == "good"


async def test_garbage_from_the_model_is_a_draft_error(gateway: Gateway) -> None:
    with pytest.raises(DraftError, match="the model's answer is not a persona proposal") as caught:
        await drafted(gateway, "garbage")
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2


async def test_no_route_and_an_unknown_route_are_draft_errors(gateway: Gateway) -> None:
    registry = config_mod.validate({"servers": {"tr": {"command": "in-process"}}}, source="t")
    with pytest.raises(DraftError, match=r"no sampling route is configured"):
        drafting.chain(registry, None)
    with pytest.raises(DraftError, match=r"unknown sampling route 'nope' \(known: good, partial"):
        drafting.chain(gateway.registry, "nope")


async def test_an_empty_job_is_a_draft_error_before_any_model_call(gateway: Gateway, llm: StandIn) -> None:
    llm.clear()
    with pytest.raises(DraftError, match="the job description is empty"):
        await drafting.draft(
            gateway.registry, gateway.catalog, persona="x", job="  ", servers={}, route="good"
        )
    assert llm.requests() == []


def test_explain_names_rules_overrides_and_budgets_but_no_fixed_value(registry_path: Path) -> None:
    text = registry_path.read_text() + (
        '\n[sampling.personas.reader]\npolicy = "llm"\nroutes = ["good"]\ntokens_per_day = 1000\n'
    )
    registry = config_mod.validate(tomlkit.parse(text).unwrap(), source="t")
    said = explain(registry, "reader")
    assert said.can == [
        "see every server in the registry",
        "call only this tool: tr__read_issue",
        "call tools that change things, when its tool rules allow them",
        "have its servers' sampling requests answered (llm)",
        "use only these model routes: good",
    ]
    assert said.cannot == [
        "call tools matching tr__add_label (deny wins over allow)",
        "choose label of tr__add_label: fixed, and hidden from it",
        "use any resource",
        "use any prompt",
        "spend more than 1000 tokens a day on models",
    ]
    assert "FIXED-REPO-VALUE-77" not in json.dumps(said.as_dict())


async def test_the_sampling_data_rules_apply_to_the_drafts_request(registry_path: Path, llm: StandIn) -> None:
    text = registry_path.read_text() + (
        '\n[[security.rules]]\ndetectors = ["email"]\ndirections = ["sampling"]\naction = "redact"\n'
    )
    registry = config_mod.validate(tomlkit.parse(text).unwrap(), source="t")
    async with parity.served(registry, {"tr": tracker()}, audit=None) as served:
        llm.clear()
        made, _ = await drafting.draft(
            registry,
            served.catalog,
            persona="triager",
            job=JOB + " Escalate to alice@example.com.",
            servers=drafting.described(registry, served.upstreams),
            route="partial",
        )
    sent = json.dumps(llm.requests())
    assert "alice@example.com" not in sent and "[REDACTED:email]" in sent
    assert made.names("tool") == ["tr__read_issue", "tr__search_code"]
