"""Data rules: every detector on a true positive and a near miss, and rules applied through a real gateway.

The detector and rule tests are in memory (pure functions); the gateway tests
run `mcpgw serve` over HTTP with one persona per rule set, and the upstream
keeps its own record of the calls it receives (`UPSTREAM_CALL_LOG`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
import tomlkit
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import background, free_port, mcpgw_command, upstream_server, write_registry
from mcpgw.audit.redact import Redactor
from mcpgw.config import parse
from mcpgw.detectors import BUILTIN, custom_detectors
from mcpgw.errors import ConfigError, DataBlocked
from mcpgw.security.dataguard import Guard

GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
NOT_JWT = base64.urlsafe_b64encode(b'{"kind":"note"}').decode().rstrip("=") + ".abcdefghij.klmnopqrst"
CARD = "4111 1111 1111 1111"
NOT_CARD = "4111 1111 1111 1112"  # one digit off: fails the Luhn checksum
AWS = "AKIAIOSFODNN7EXAMPLE"

CASES: dict[str, tuple[str, str]] = {
    # detector: (text with a true positive, near miss that must be left alone)
    "aws-key": (f"key {AWS} here", "key AKIAIOSFODNN7EXAMPL here"),
    "github-token": (f"token {GITHUB}", "branch ghp_short is fine"),
    "slack-token": ("hook xoxb-1234567890-abcdefghij", "hook xoxq-1234567890-abcdefghij"),
    "private-key": (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
        "-----END RSA PRIVATE KEY-----",
        "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n"
        "-----END PUBLIC KEY-----",
    ),
    "jwt": (f"session {JWT}", f"session {NOT_JWT}"),
    "bearer": ("Authorization: Bearer abcdef0123456789", "the bearer of bad news"),
    "url-password": (
        "clone https://bob:hunter2@git.example.com/repo",
        "clone https://bob@git.example.com/repo",
    ),
    "card": (f"pay with {CARD} today", f"pay with {NOT_CARD} today"),
    "email": ("write to ann@example.com", "write to ann@localhost"),
    "employee-id": ("ask EMP-123456", "ask EMP-12345"),
}
SECRETS = {
    "aws-key": AWS,
    "github-token": GITHUB,
    "slack-token": "xoxb-1234567890",
    "private-key": "MIIBOgIBAAJBAKj34",
    "jwt": JWT,
    "bearer": "abcdef0123456789",
    "url-password": "hunter2",
    "card": CARD,
    "email": "ann@example.com",
    "employee-id": "EMP-123456",
}
DETECTORS = {**BUILTIN, **custom_detectors({"employee-id": r"\bEMP-[0-9]{6}\b"})}


def guard(*rules: dict[str, Any]) -> Guard:
    registry = parse(
        tomlkit.dumps(
            {
                "personas": {"support": {}, "ops": {}},
                "security": {"detectors": {"employee-id": r"\bEMP-[0-9]{6}\b"}, "rules": list(rules)},
            }
        ),
        source="test",
    )
    made = Guard.from_registry(registry)
    assert made is not None
    return made


def result_of(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "structuredContent": {"result": text}}


def test_every_built_in_detector_has_a_case() -> None:
    assert set(BUILTIN) <= set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_detector_redacts_true_positive_and_leaves_near_miss(name: str) -> None:
    positive, near_miss = CASES[name]
    detector = DETECTORS[name]
    assert list(detector.spans(positive)) and not list(detector.spans(near_miss))
    rules = guard({"detectors": [name], "action": "redact"})
    redacted = rules.check("results", None, "up__echo", result_of(positive))
    text = redacted["content"][0]["text"]
    assert f"[REDACTED:{name}]" in text and text == redacted["structuredContent"]["result"]
    assert SECRETS[name] in positive and SECRETS[name] not in text  # the secret itself is gone
    untouched = result_of(near_miss)
    assert rules.check("results", None, "up__echo", untouched) is untouched


@pytest.mark.parametrize("name", sorted(CASES))
def test_detector_blocks_true_positive_and_passes_near_miss(name: str) -> None:
    positive, near_miss = CASES[name]
    rules = guard({"detectors": [name], "action": "block", "directions": ["arguments"]})
    with pytest.raises(DataBlocked) as blocked:
        rules.check("arguments", None, "up__echo", {"message": positive})
    assert blocked.value.message == f"blocked by a data rule: {name} found in the arguments of up__echo"
    assert positive not in blocked.value.message
    assert rules.check("arguments", None, "up__echo", {"message": near_miss}) == {"message": near_miss}


def test_rules_apply_by_persona_direction_and_tool() -> None:
    rules = guard(
        {"detectors": ["email"], "action": "redact", "personas": ["support"], "directions": ["results"]},
        {"detectors": ["email"], "action": "block", "personas": ["support"], "tools": ["mail__*"]},
        {"detectors": ["card"], "action": "monitor"},
    )
    mail = result_of("from ann@example.com")
    assert rules.check("results", "ops", "up__echo", mail) is mail  # another persona
    assert rules.check("arguments", "support", "up__echo", {"to": "ann@example.com"}) == {
        "to": "ann@example.com"
    }
    assert "[REDACTED:email]" in rules.check("results", "support", "up__echo", mail)["content"][0]["text"]
    with pytest.raises(DataBlocked):  # block is stronger than redact where both match
        rules.check("results", "support", "mail__read", mail)
    card = {"message": CARD}
    assert rules.check("arguments", None, "up__echo", card) is card  # monitor: recorded, never changed
    assert rules.plan("arguments", "ops", "up__echo") is not None
    assert rules.plan("results", "ops", "up__echo") is not None
    assert (
        guard({"detectors": ["card"], "action": "block", "personas": ["ops"]}).plan("results", None, "x")
        is None
    )


def test_sampling_messages_are_checked_before_they_go_to_a_model() -> None:
    rules = guard({"detectors": ["aws-key", "email"], "action": "redact", "directions": ["sampling"]})
    params = {
        "messages": [{"role": "user", "content": {"type": "text", "text": f"use {AWS} for ann@example.com"}}],
        "systemPrompt": "mail ann@example.com",
        "maxTokens": 10,
    }
    checked = rules.check_sampling(None, params)
    assert checked["messages"][0]["content"]["text"] == "use [REDACTED:aws-key] for [REDACTED:email]"
    assert checked["systemPrompt"] == "mail [REDACTED:email]" and checked["maxTokens"] == 10
    assert params["systemPrompt"] == "mail ann@example.com"  # the caller's value is not mutated
    assert rules.check("results", None, "x", result_of(AWS))["content"][0]["text"] == AWS  # sampling only
    blocking = guard({"detectors": ["card"], "action": "block", "directions": ["sampling"]})
    with pytest.raises(DataBlocked, match="card found in a sampling request from"):
        blocking.check_sampling("support", {"messages": [{"content": {"type": "text", "text": CARD}}]})


def test_no_rules_means_no_guard() -> None:
    assert Guard.from_registry(parse("", source="test")) is None


def test_audit_redaction_always_covers_secrets_and_cards_and_rule_detectors() -> None:
    plain = Redactor()
    assert (
        plain.text(f"{CARD} {GITHUB} ann@example.com")
        == "[REDACTED:card] [REDACTED:github-token] ann@example.com"
    )
    assert plain.text(NOT_CARD) == NOT_CARD
    with_rules = Redactor(detectors=guard({"detectors": ["email"], "action": "monitor"}).detectors_in_rules())
    assert with_rules.text("ann@example.com") == "[REDACTED:email]"


@pytest.mark.parametrize(
    ("security", "key", "reason"),
    [
        ({"rules": [{"detectors": ["nope"], "action": "block"}]}, "security", "names detector 'nope'"),
        ({"rules": [{"detectors": ["card"], "action": "shout"}]}, "security.rules.0.action", "'monitor'"),
        ({"rules": [{"detectors": [], "action": "block"}]}, "security.rules.0.detectors", "at least 1"),
        ({"rules": [{"detectors": ["card"], "action": "block", "personas": ["ghost"]}]}, None, "'ghost'"),
        (
            {"rules": [{"detectors": ["card"], "action": "block", "directions": ["up"]}]},
            "directions",
            "'results'",
        ),
        ({"detectors": {"card": "x"}}, "security.detectors", "built in"),
        ({"detectors": {"bad": "("}}, "security.detectors", "not a valid regular expression"),
        ({"detectors": {"Bad Name": "x"}}, "security.detectors", "lower-case"),
        ({"max_description": 0}, "security.max_description", "greater than or equal to 1"),
        ({"colour": "red"}, "security.colour", "unknown key"),
    ],
)
def test_bad_security_config_names_the_key(security: dict[str, Any], key: str | None, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tomlkit.dumps({"security": security}), source="servers.toml")
    assert reason in str(caught.value)
    if key is not None:
        assert key in str(caught.value)


# --- secrets glued to other characters --------------------------------------------------------------

REDACT_ALL = {"detectors": sorted(BUILTIN), "action": "redact"}
SLACK = "xoxb-1234567890-abcdefghij"


def found_in(value: Any) -> list[str]:
    """The built-in detectors that find something in the JSON text of `value`."""
    dump = json.dumps(value)
    return [name for name, detector in BUILTIN.items() if list(detector.spans(dump))]


GLUED: list[tuple[str, str]] = [
    ("aws-key", f"x_{AWS}"),
    ("aws-key", f"id{AWS}_2"),
    ("github-token", f"evil__{GITHUB}"),
    ("github-token", f"x{GITHUB}"),
    ("slack-token", f"token{SLACK}"),
    ("slack-token", f"a_{SLACK}"),
    ("jwt", f"x_{JWT}"),
    ("jwt", f"session{JWT}"),
    ("bearer", "authBearer abcdef0123456789"),
    ("bearer", "x_bearer abcdef0123456789"),
    ("bearer", "BeArEr abcdef0123456789"),  # the scheme name is case-insensitive
    ("card", "x_4111111111111111"),
    ("card", "ref-4111-1111-1111-1111"),
    ("card", "cc4111 1111 1111 1111"),
    ("card", "4111111111111111-"),
    ("email", "first_last@example.com"),
    ("email", "ann@example.com_x"),
]


@pytest.mark.parametrize(("name", "text"), GLUED, ids=[text[:24] for _, text in GLUED])
def test_secret_glued_to_word_characters_is_found(name: str, text: str) -> None:
    assert list(BUILTIN[name].spans(text)), text
    rules = guard({"detectors": [name], "action": "redact"})
    out = rules.check("arguments", None, "up__echo", {"message": text})["message"]
    assert f"[REDACTED:{name}]" in out and not list(BUILTIN[name].spans(out))
    for piece in ("AKIAIOSFODNN7", "ghp_", "xoxb-", "eyJ", "abcdef0123456789", "1111", "first_", "ann@"):
        assert piece not in out, out
    with pytest.raises(DataBlocked):
        guard({"detectors": [name], "action": "block"}).check("arguments", None, "x", {"m": text})


def test_chains_of_digit_groups_are_still_not_cards() -> None:
    for text in ("call 1-4111-1111-1111-1111", "4111-1111-1111-1111-1", "24111111111111111"):
        assert not list(BUILTIN["card"].spans(text)), text


def test_a_redacted_url_password_is_not_found_again() -> None:
    url = {"u": "https://bob:hunter2@git.example.com/r"}
    out = guard({"detectors": ["url-password"], "action": "redact"}).check("arguments", None, "x", url)
    assert out == {"u": "https://[REDACTED:url-password]@git.example.com/r"} and not found_in(out)
    # With every detector, `hunter2@git.example.com` is an e-mail address first: the password goes too.
    out = guard(REDACT_ALL).check("arguments", None, "x", url)
    assert "hunter2" not in out["u"] and not found_in(out)


# --- through a real gateway -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """A gateway over HTTP with personas `strict`, `scrub` and `open`: (base URL, audit db, call log)."""
    tmp = tmp_path_factory.mktemp("guarded")
    calls, db = tmp / "calls.jsonl", tmp / "audit.db"
    config = write_registry(
        tmp / "servers.toml", {"up": {**upstream_server(), "env": {"UPSTREAM_CALL_LOG": str(calls)}}}
    )
    doc = tomlkit.parse(config.read_text())
    doc["personas"] = {"strict": {}, "scrub": {}, "open": {}}
    doc["audit"] = {"path": str(db)}
    doc["security"] = {
        "detectors": {"employee-id": r"\bEMP-[0-9]{6}\b"},
        "rules": [
            {
                "personas": ["strict"],
                "detectors": ["aws-key"],
                "action": "block",
                "directions": ["arguments"],
            },
            {"personas": ["strict"], "detectors": ["card"], "action": "block", "directions": ["results"]},
            {
                "personas": ["scrub"],
                "detectors": ["email", "employee-id"],
                "action": "redact",
                "directions": ["results"],
            },
            {"personas": ["scrub"], "detectors": ["card"], "action": "monitor", "directions": ["arguments"]},
        ],
    }
    config.write_text(tomlkit.dumps(doc))
    port = free_port()
    command = mcpgw_command("serve", "--transport", "http", "--port", str(port), "--config", str(config))
    with background([*command, "--log-level", "warning"], port=port):
        yield f"http://127.0.0.1:{port}", db, calls


def audit_row(db: Path, needle: str) -> dict[str, Any]:
    """The call row whose arguments contain `needle` (the writer batches: wait for it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if db.exists():
            found = list(
                sqlite_utils.Database(db).query(
                    "select * from events where kind = 'call' and arguments like ?", [f"%{needle}%"]
                )
            )
            if found:
                return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no audit row with {needle!r}")


def upstream_messages(calls: Path) -> list[str]:
    if not calls.exists():
        return []
    return [json.loads(line)["arguments"].get("message", "") for line in calls.read_text().splitlines()]


async def call(base: str, persona: str, message: str) -> str:
    """The echoed text, or for a refusal `error <code>: <message>`."""
    async with Client(f"{base}/personas/{persona}/mcp", cache=None) as client:
        await client.list_tools()
        try:
            result = await client.call_tool("up__echo", {"message": message})
        except MCPError as exc:
            return f"error {exc.error.code}: {exc.error.message}"
        return str(result.content[0].text)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_block_on_arguments_never_reaches_the_upstream(guarded: tuple[str, Path, Path]) -> None:
    base, db, calls = guarded
    message = f"deploy with {AWS} marker-args"
    assert (
        await call(base, "strict", message)
        == "error -32030: blocked by a data rule: aws-key found in the arguments of up__echo"
    )
    assert not any("marker-args" in m for m in upstream_messages(calls))
    row = audit_row(db, "marker-args")
    assert row["outcome"] == "blocked" and row["persona"] == "strict"
    assert AWS not in row["arguments"] and "[REDACTED:aws-key]" in row["arguments"]
    assert row["findings"] == "arguments: aws-key x1 (aws-key: block)"
    assert await call(base, "open", message) == message  # a persona without rules is untouched


@pytest.mark.anyio
async def test_block_on_results_withholds_them_and_records_blocked(guarded: tuple[str, Path, Path]) -> None:
    base, db, calls = guarded
    message = f"card {CARD} marker-results"
    assert (
        await call(base, "strict", message)
        == "error -32030: blocked by a data rule: card found in the result of up__echo"
    )
    assert any("marker-results" in m for m in upstream_messages(calls))  # it ran; its result was withheld
    row = audit_row(db, "marker-results")
    assert row["outcome"] == "blocked" and row["result"] is None
    assert "4111" not in row["arguments"] and "[REDACTED:card]" in row["arguments"]
    assert "4111" not in (db.read_bytes() + (db.parent / "audit.db-wal").read_bytes()).decode("latin-1")
    near_miss = f"card {NOT_CARD} marker-near"
    assert await call(base, "strict", near_miss) == near_miss


@pytest.mark.anyio
async def test_redact_and_monitor_through_the_gateway(guarded: tuple[str, Path, Path]) -> None:
    base, db, _ = guarded
    message = "mail ann@example.com about EMP-123456, not ann@localhost or EMP-12345 marker-redact"
    assert await call(base, "scrub", message) == (
        "mail [REDACTED:email] about [REDACTED:employee-id], not ann@localhost or EMP-12345 marker-redact"
    )
    row = audit_row(db, "marker-redact")
    assert row["outcome"] == "ok" and "ann@example.com" not in row["arguments"]
    # x2: the text is in the result twice, as content and as structured content
    assert row["findings"] == "results: email x2, employee-id x2 (email: redact; employee-id: redact)"

    monitored = f"pay {CARD} marker-monitor"
    assert await call(base, "scrub", monitored) == monitored  # monitor records and changes nothing
    row = audit_row(db, "marker-monitor")
    assert row["findings"] == "arguments: card x1 (card: monitor)"
    assert "4111" not in row["arguments"] and "4111" not in row["result"]  # the audit log is redacted anyway
