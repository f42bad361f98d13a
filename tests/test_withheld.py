"""Withheld items cannot be reached by a client that knows their names, through a real gateway.

A production gateway withholds what is not pinned; a client that learned a
withheld tool, prompt or resource template elsewhere (an earlier listing, the
upstream's docs) must get exactly the error of a name that does not exist,
and the audit log records the request as `withheld`. The lock file here pins
two copies of our test upstream (one namespaced, one not) minus `echo`,
`greet` and the `test://items/{item_id}` template.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlite_utils
import tomlkit
from click.testing import CliRunner
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference, ResourceTemplateReference

from conftest import SERVERS, gateway_stdio, lite_server, mcpgw_command, pin_registry, write_registry
from mcpgw.cli import cli
from mcpgw.security import pins

pytestmark = pytest.mark.anyio

TEMPLATE = "test://items/{item_id}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(registry, upstream call log): production mode, pinned, with echo/greet/the template unpinned."""
    tmp = tmp_path_factory.mktemp("withheld")
    calls = tmp / "upstream-calls.jsonl"
    up = {**lite_server(), "env": {"UPSTREAM_CALL_LOG": str(calls)}}
    raw = {**lite_server("--name", "raw"), "namespace": ""}
    config = write_registry(tmp / "servers.toml", {"up": up, "raw": raw}, mode="production")
    parsed = tomlkit.parse(config.read_text())
    parsed["personas"] = {
        "reader": {"description": "sees everything that is served"},
        "rawonly": {"servers": ["raw"]},
    }
    config.write_text(tomlkit.dumps(parsed))
    lock_file, lock = pin_registry(config)
    del lock["up"]["tools"]["echo"], lock["up"]["prompts"]["greet"]
    del lock["up"]["resource_templates"][TEMPLATE], lock["raw"]["resource_templates"][TEMPLATE]
    pins.write_lock(lock_file, lock)
    return config, calls


async def error_of(call: Any) -> tuple[int, str]:
    with pytest.raises(MCPError) as caught:
        await call
    return caught.value.error.code, caught.value.error.message


async def assert_withheld_refused(client: Client, *, subscribe: bool) -> None:
    listed = await client.list_tools()
    names = {t.name for t in listed.tools}
    assert "up__add" in names and "echo" in names and "up__echo" not in names
    assert [t.uri_template for t in (await client.list_resource_templates()).resource_templates] == []
    assert "up__greet" not in {p.name for p in (await client.list_prompts()).prompts}

    # tools/call: a withheld tool fails like one that never existed
    code, message = await error_of(client.call_tool("up__nope", {"message": "x"}))
    assert await error_of(client.call_tool("up__echo", {"message": "x"})) == (
        code,
        message.replace("up__nope", "up__echo"),
    )
    assert message == "Unknown tool: up__nope"

    # prompts/get and completions of its arguments
    code, message = await error_of(client.get_prompt("up__nope", {"name": "A"}))
    assert await error_of(client.get_prompt("up__greet", {"name": "A"})) == (
        code,
        message.replace("up__nope", "up__greet"),
    )
    greet = PromptReference(type="ref/prompt", name="up__greet")
    assert await error_of(client.complete(greet, {"name": "name", "value": "A"})) == (
        code,
        "Unknown prompt: up__greet",
    )

    # resources/read of a URI under a withheld template: the error of a URI no template serves
    code, message = await error_of(client.read_resource("mcpgw://nowhere/test://items/7"))
    assert message == "Unknown resource: mcpgw://nowhere/test://items/7"
    for uri in ("mcpgw://up/test://items/7", "test://items/7"):
        assert await error_of(client.read_resource(uri)) == (code, f"Unknown resource: {uri}")
        if subscribe:  # handshake era only (2026-07-28 has no resources/subscribe)
            assert await error_of(client.subscribe_resource(uri)) == (code, f"Unknown resource: {uri}")
    for template in (f"mcpgw://up/{TEMPLATE}", TEMPLATE):
        ref = ResourceTemplateReference(type="ref/resource", uri=template)
        assert await error_of(client.complete(ref, {"name": "item_id", "value": "1"})) == (
            code,
            f"Unknown resource: {template}",
        )

    # what is pinned is still served
    assert (await client.call_tool("up__add", {"a": 1, "b": 2})).structured_content == {"sum": 3}
    static = await client.read_resource("mcpgw://up/test://static")
    assert static.contents[0].text == "static text"  # type: ignore[union-attr]
    assert (await client.read_resource("test://static")).contents[0].text == "static text"  # type: ignore[union-attr]


def withheld_rows(db: Path) -> list[tuple[str, str | None]]:
    rows = sqlite_utils.Database(db).query(
        "select method, name from events where kind != 'security' and outcome = 'withheld' order by id"
    )
    return [(r["method"], r["name"]) for r in rows]


EXPECTED_ROWS = [
    ("tools/call", "up__echo"),
    ("prompts/get", "up__greet"),
    ("completion/complete", None),
    ("resources/read", "mcpgw://up/test://items/7"),
    ("resources/subscribe", "mcpgw://up/test://items/7"),
    ("resources/read", "test://items/7"),
    ("resources/subscribe", "test://items/7"),
    ("completion/complete", None),
    ("completion/complete", None),
]


async def test_withheld_items_cannot_be_called_read_or_completed(
    secured: tuple[Path, Path], audit_db: Path
) -> None:
    config, calls = secured
    async with gateway_stdio(config, mode="legacy") as client:
        await assert_withheld_refused(client, subscribe=True)
    upstream_calls = [json.loads(line)["name"] for line in calls.read_text().splitlines()]
    assert "echo" not in upstream_calls and "add" in upstream_calls
    assert [(m, n if m != "completion/complete" else None) for m, n in withheld_rows(audit_db)] == (
        EXPECTED_ROWS
    )
    unknown = sqlite_utils.Database(audit_db).query(
        "select outcome from events where name in ('up__nope', 'mcpgw://nowhere/test://items/7')"
    )
    assert {r["outcome"] for r in unknown} == {"error"}  # unknown is an error, not a withholding


async def test_a_persona_cannot_reach_withheld_items_either(
    secured: tuple[Path, Path], audit_db: Path
) -> None:
    config, _ = secured
    async with gateway_stdio(config, extra=("--persona", "reader")) as client:  # 2026-07-28 era
        await assert_withheld_refused(client, subscribe=False)
        # through a persona, a URI no template matches, in the same namespace, gets the very same error
        unmatched = "mcpgw://up/test://nothing/7"
        withheld = "mcpgw://up/test://items/7"
        assert (await error_of(client.read_resource(unmatched)))[1] == f"Unknown resource: {unmatched}"
        assert (await error_of(client.read_resource(withheld)))[1] == f"Unknown resource: {withheld}"
    expected = [row for row in EXPECTED_ROWS if row[0] != "resources/subscribe"]
    expected.append(("resources/read", "mcpgw://up/test://items/7"))
    assert [(m, n if m != "completion/complete" else None) for m, n in withheld_rows(audit_db)] == expected


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # progress lines go to stderr


def test_listings_apply_the_policy_and_say_what_is_withheld(secured: tuple[Path, Path]) -> None:
    config = str(secured[0])
    up_items = [
        ("tool", "up__echo", "up"),
        ("prompt", "up__greet", "up"),
        ("resource template", f"mcpgw://up/{TEMPLATE}", "up"),
    ]
    everything = {*up_items, ("resource template", TEMPLATE, "raw")}

    listed = cli_json("tools", "--config", config, "--json")
    names = {t["name"] for t in listed["tools"]}
    assert "up__add" in names and "echo" in names and "up__echo" not in names
    assert {(w["kind"], w["name"], w["server"]) for w in listed["withheld"]} == everything
    assert all("it is not pinned" in w["reason"] for w in listed["withheld"])
    only_raw = cli_json("tools", "--config", config, "--json", "--persona", "rawonly")
    assert [(w["name"], w["server"]) for w in only_raw["withheld"]] == [(TEMPLATE, "raw")]
    assert "up__add" not in {t["name"] for t in only_raw["tools"]}

    personas = {p["persona"]: p for p in cli_json("personas", "--config", config, "--json")["personas"]}
    assert {(w["kind"], w["name"], w["server"]) for w in personas["reader"]["withheld"]} == everything
    assert [w["name"] for w in personas["rawonly"]["withheld"]] == [TEMPLATE]
    assert personas["reader"]["resource_templates"] == 0 and personas["reader"]["prompts"] == 1  # raw greet
    text = CliRunner().invoke(cli, ["personas", "--config", config])
    assert "4 items withheld" in text.output and "withheld: 4 (clients do not see these" in text.output

    servers = cli_json("list-servers", "--config", config, "--check", "--json")
    assert {s["name"]: s["withheld"] for s in servers["servers"]} == {"up": 3, "raw": 1}
    assert {(w["kind"], w["name"], w["server"]) for w in servers["withheld"]} == everything


def test_pin_approve_accepts_only_the_named_items(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()}, mode="production")
    runner = CliRunner()
    assert runner.invoke(cli, ["pin", "--config", str(config)]).exit_code == 0
    lock_file = tmp_path / "servers.lock"
    lock = pins.read_lock(lock_file)
    assert lock is not None
    del (
        lock["up"]["tools"]["echo"],
        lock["up"]["prompts"]["greet"],
        lock["up"]["resource_templates"][TEMPLATE],
    )
    lock["up"]["tools"]["add"] = pins.pin_of("tools", {"name": "add", "description": "Add, as it was."})
    pins.write_lock(lock_file, lock)

    def pin(*args: str) -> Any:
        return runner.invoke(cli, ["pin", "--config", str(config), *args])

    shown = pin("--diff", "up", "--tool", "add")
    assert shown.exit_code == 1, shown.output  # the item asked about differs from its pin
    assert "up: tool 'add' changed" in shown.output and '-  "description": "Add, as it was."' in shown.output
    assert "echo" not in shown.output and "3 other differences still pending" in shown.output

    before = lock_file.read_text()
    for args, message in [
        (("--approve", "up", "--tool", "nope"), "up serves no tool 'nope' and has no pin for one"),
        (("--approve", "--tool", "echo"), "need the SERVER they belong to"),
        (("up", "--tool", "echo"), "choose what --approve accepts or --diff shows"),
    ]:
        refused = pin(*args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
        if "nope" in args:
            assert "pending changes: tool 'add' changed, tool 'echo' new" in refused.output
    assert lock_file.read_text() == before

    approved = pin("--approve", "up", "--tool", "echo", "--prompt", "greet", "--tool", "pid")
    assert approved.exit_code == 0, approved.output
    assert "accepted: up: tool 'echo' new" in approved.output
    assert "accepted: up: prompt 'greet' new" in approved.output
    assert "up: tool 'pid' is up to date" in approved.output
    assert "2 other differences still pending" in approved.output

    listed = cli_json("tools", "--config", str(config), "--json")
    names = {t["name"] for t in listed["tools"]}
    assert {"up__echo", "up__pid"} <= names and "up__add" not in names
    assert {(w["name"], w["reason"].split(" (")[0]) for w in listed["withheld"]} == {
        ("up__add", "its definition differs from its pin"),
        (f"mcpgw://up/{TEMPLATE}", "it is not pinned"),
    }

    assert pin("--approve", "up", "--template", TEMPLATE, "--tool", "add").exit_code == 0
    assert cli_json("tools", "--config", str(config), "--json")["withheld"] == []


async def test_a_flagged_template_is_withheld_until_approved_by_name(tmp_path: Path, audit_db: Path) -> None:
    mutable = {
        "command": sys.executable,
        "args": [str(SERVERS / "mutable.py"), "--poison-template"],
        "env": {"MUTABLE_STATE": str(tmp_path / "state")},
    }
    config = write_registry(tmp_path / "servers.toml", {"mut": mutable}, mode="production")

    async def pin(*args: str) -> str:
        done = await anyio.run_process(mcpgw_command("pin", "--config", str(config), *args), check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    assert "mut: resource template 'notes://{title}' flagged, not pinned" in await pin()
    uri = "mcpgw://mut/notes://today"
    async with gateway_stdio(config) as client:
        assert (await client.list_resource_templates()).resource_templates == []
        code, _ = await error_of(client.read_resource("mcpgw://nowhere/notes://today"))
        assert await error_of(client.read_resource(uri)) == (code, f"Unknown resource: {uri}")

        approved = await pin("--approve", "mut", "--template", "notes://{title}")
        assert "accepted: mut: resource template 'notes://{title}' new" in approved
        with anyio.fail_after(60):  # the running gateway sees the lock file change
            while not (await client.list_resource_templates()).resource_templates:
                await anyio.sleep(0.1)
        assert (await client.read_resource(uri)).contents[0].text == "note today"  # type: ignore[union-attr]
    rows = sqlite_utils.Database(audit_db).query(
        "select kind, method, outcome, error from events where name like '%notes://%' order by id"
    )
    outcomes = [(r["kind"], r["method"], r["outcome"]) for r in rows]
    assert outcomes[0][0] == "security" and outcomes[0][2] == "withheld"
    assert [outcome for *_, outcome in outcomes[1:]] == ["error", "withheld", "ok"]  # nowhere, mut, approved
