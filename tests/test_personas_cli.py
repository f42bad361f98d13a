"""`mcpgw personas draft` and `explain` as a user runs them: the table, the TOML, the diff, `--write`,
`--json`, and a one-line error with exit 2 for bad input, nothing written.

Real upstream (tests/servers/upstream.py over stdio), the stand-in model (`scripted...` answers).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import LITE, StandIn
from mcpgw.cli import cli

KEY_VAR = "MCPGW_TEST_LLM_KEY"
JOB = "Echo messages back and add numbers; never delete anything."
PROPOSAL = {
    "description": "Echoes and sums",
    "tools": [
        {"name": "up__echo", "reason": "echo a message"},
        {"name": "up__add", "reason": "add two numbers"},
        {"name": "*", "reason": "in case"},
    ],
}
REGISTRY = """\
# mcpgw registry for the CLI tests: this comment stays
[servers.up]
command = "{python}"
args = ["{upstream}"]

[sampling.routes.good]
model = "openai/scripted-cli-good"
api_base = "{base}"
api_key_env = "{key}"

[sampling.routes.garbage]
model = "openai/scripted-cli-garbage"
api_base = "{base}"
api_key_env = "{key}"

# narrow: echoes only
[personas.narrow]
description = "Echoes only"
allow = ["up__echo"]  # one tool
"""


def run(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args))


@pytest.fixture
def registry(tmp_path: Path, llm: StandIn, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(KEY_VAR, "sk-cli-test")
    llm.script("scripted-cli-good", json.dumps(PROPOSAL))
    llm.script("scripted-cli-garbage", "not json at all {")
    path = tmp_path / "servers.toml"
    path.write_text(REGISTRY.format(python=sys.executable, upstream=LITE, base=llm.base, key=KEY_VAR))
    return path


def test_draft_shows_the_table_the_toml_and_the_diff_then_writes_what_it_showed(
    registry: Path, audit_db: Path
) -> None:
    before = registry.read_text()
    shown = run("personas", "draft", "helper", "--job", JOB, "-c", str(registry), "--route", "good")
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "draft of persona helper (read-only)" in out and "echo a message" in out
    assert "dropped by the guard rails" in out and "a pattern, not a name" in out
    assert '[personas.helper]\ndescription = "Echoes and sums"' in out
    assert '+allow = ["up__echo", "up__add"]' in out and "+read_only = true" in out
    assert registry.read_text() == before  # shown, not written
    assert "route good:" in shown.stderr
    row = sqlite3.connect(audit_db).execute("select name, persona, outcome from events where kind='draft'")
    assert row.fetchall() == [("good", "helper", "ok")]

    written = run("personas", "-c", str(registry), "draft", "helper", "--job", JOB, "--write", "--json")
    assert written.exit_code == 0, written.output
    data: dict[str, Any] = json.loads(written.stdout)
    assert data["written"] is True and data["read_only"] is True
    assert [i["name"] for i in data["items"]] == ["up__echo", "up__add"]
    text = registry.read_text()
    assert text.startswith("# mcpgw registry for the CLI tests: this comment stays")
    assert "# narrow: echoes only" in text and "# one tool" in text and data["toml"] in text

    listed = run("personas", "-c", str(registry), "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["persona"]: row for row in json.loads(listed.stdout)["personas"]}
    assert rows["helper"]["tools"] == 2 and rows["helper"]["read_only"] is True


def test_draft_does_not_widen_an_existing_persona_unless_told(registry: Path) -> None:
    before = registry.read_text()
    refused = run("personas", "draft", "narrow", "--job", JOB, "-c", str(registry), "--write")
    assert refused.exit_code == 2, refused.output
    assert "widens:" in refused.stdout and "up__add" in refused.stdout
    assert refused.stderr.strip().splitlines()[-1] == (
        "mcpgw: error: the draft gives persona 'narrow' access it does not have today (up__add); "
        "review it and pass --widen to write it"
    )
    assert registry.read_text() == before

    widened = run("personas", "draft", "narrow", "--job", JOB, "-c", str(registry), "--write", "--widen")
    assert widened.exit_code == 0, widened.output
    text = registry.read_text()
    assert 'description = "Echoes only"' in text  # a person's description is kept
    assert 'allow = ["up__echo", "up__add"]' in text and "# narrow: echoes only" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--route", "garbage"], "the model's answer is not a persona proposal"),
        (["--route", "nope"], "unknown sampling route 'nope' (known: good, garbage)"),
    ],
)
def test_bad_drafts_are_one_line_exit_2_and_nothing_written(
    registry: Path, args: list[str], message: str
) -> None:
    before = registry.read_text()
    result = run("personas", "draft", "helper", "--job", JOB, "-c", str(registry), "--write", *args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mcpgw: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert registry.read_text() == before


def test_no_route_configured_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(f'[servers.up]\ncommand = "{sys.executable}"\nargs = ["{LITE}"]\n')
    result = run("personas", "draft", "helper", "--job", JOB, "-c", str(path), "--write")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "mcpgw: error: no sampling route is configured: add a [sampling.routes.NAME] table to the "
        "registry (see README, Drafting personas)"
    )


def test_explain_says_what_a_persona_can_and_cannot_do(registry: Path) -> None:
    said = run("personas", "explain", "narrow", "-c", str(registry))
    assert said.exit_code == 0, said.output
    assert said.stdout.splitlines() == [
        "persona narrow: Echoes only",
        "It can:",
        "  - see every server in the registry",
        "  - call only this tool: up__echo",
        "  - call tools that change things, when its tool rules allow them",
        "It cannot:",
        "  - use any resource",
        "  - use any prompt",
    ]
    as_json = json.loads(run("personas", "--json", "-c", str(registry), "explain", "narrow").stdout)
    assert as_json["can"][1] == "call only this tool: up__echo"
    unknown = run("personas", "explain", "nope", "-c", str(registry))
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == "mcpgw: error: unknown persona 'nope' (known: narrow)"
