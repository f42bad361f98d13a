"""Data rules: every detector on a true positive and a near miss, and rules applied through a real gateway.

The detector and rule tests are pure functions; the gateway tests serve the
gateway in memory (tests/parity.py) with one persona per rule set, and the
upstream keeps its own record of the calls it receives (`TestUpstream.calls`).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlite_utils
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError

from mcpgw.audit.redact import Redactor
from mcpgw.config import parse
from mcpgw.core.gateway import Gateway
from mcpgw.detectors import BUILTIN, Base64Text, custom_detectors
from mcpgw.errors import ConfigError, DataBlocked
from mcpgw.security.dataguard import Guard
from parity import TestUpstream, gateway_client, registry, served

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


# --- the holes an adversarial review found ----------------------------------------------------------

BLOCK_ALL = {"detectors": sorted(BUILTIN), "action": "block"}
REDACT_ALL = {"detectors": sorted(BUILTIN), "action": "redact"}
SLACK = "xoxb-1234567890-abcdefghij"
SKIPPED_BEFORE = ("data", "type", "_meta", "mimeType", "blob", "resultType")
# A millisecond timestamp that passes the Luhn checksum: in text it looks like a card, as a number not.
TIMESTAMP = 1717171717174


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def found_in(value: Any) -> list[str]:
    """The built-in detectors that find something in the JSON text of `value`."""
    dump = json.dumps(value)
    return [name for name, detector in BUILTIN.items() if list(detector.spans(dump))]


@pytest.mark.parametrize("key", SKIPPED_BEFORE)
def test_secret_under_a_formerly_skipped_key_is_found_at_any_depth(key: str) -> None:
    arguments = {"query": "ok", "nested": [{key: f"use {AWS}"}]}
    with pytest.raises(DataBlocked, match="aws-key found in the arguments of up__echo"):
        guard(BLOCK_ALL).check("arguments", None, "up__echo", arguments)
    redacted = guard(REDACT_ALL).check("arguments", None, "up__echo", arguments)
    assert redacted == {"query": "ok", "nested": [{key: "use [REDACTED:aws-key]"}]}
    assert arguments["nested"] == [{key: f"use {AWS}"}]  # the caller's value is not mutated


def test_arguments_data_key_carrying_an_aws_key_is_blocked() -> None:
    with pytest.raises(DataBlocked, match="aws-key found"):
        guard(BLOCK_ALL).check("arguments", None, "up__echo", {"data": AWS})


def test_structured_content_type_key_carrying_a_secret_is_redacted() -> None:
    result = {"content": [], "structuredContent": {"type": GITHUB, "items": [{"type": f"a {JWT}"}]}}
    out = guard(REDACT_ALL).check("results", None, "up__echo", result)
    assert out["structuredContent"] == {
        "type": "[REDACTED:github-token]",
        "items": [{"type": "a [REDACTED:jwt]"}],
    }


def test_meta_carrying_a_token_is_redacted_and_blocked() -> None:
    result = {"content": [{"type": "text", "text": "ok"}], "_meta": {"trace": {"auth": SLACK}}}
    out = guard(REDACT_ALL).check("results", None, "up__echo", result)
    assert (
        out["_meta"] == {"trace": {"auth": "[REDACTED:slack-token]"}} and out["content"] is result["content"]
    )
    with pytest.raises(DataBlocked, match="slack-token found in the result of up__echo"):
        guard(BLOCK_ALL).check("results", None, "up__echo", result)


def test_secret_inside_base64_image_data_is_redacted_and_re_encoded() -> None:
    image = {"type": "image", "data": b64(f"caption: key {AWS} inside"), "mimeType": "image/png"}
    out = guard(REDACT_ALL).check("results", None, "up__echo", {"content": [image]})
    data = out["content"][0]["data"]
    assert base64.b64decode(data, validate=True).decode() == "caption: key [REDACTED:aws-key] inside"
    assert out["content"][0]["mimeType"] == "image/png" and out["content"][0]["type"] == "image"
    with pytest.raises(DataBlocked, match="aws-key found"):
        guard(BLOCK_ALL).check("results", None, "up__echo", {"content": [image]})


def test_card_inside_base64_resource_blob_is_blocked() -> None:
    resource = {"uri": "file:///r.txt", "mimeType": "text/plain", "blob": b64(f"pay {CARD}")}
    result = {"contents": [resource]}
    with pytest.raises(DataBlocked, match=re.escape("card found in the result of file:///r.txt")):
        guard(BLOCK_ALL).check("results", None, "file:///r.txt", result)


@pytest.mark.parametrize(
    ("encode", "decode"),
    [
        (lambda t: base64.urlsafe_b64encode(t.encode()).decode().rstrip("="), None),  # JWT-style
        (lambda t: base64.encodebytes(t.encode()).decode(), None),  # MIME: 76-character lines
        (lambda t: b64(b64(t)), lambda v: base64.b64decode(base64.b64decode(v)).decode()),  # nested
        (lambda t: "data:text/plain;base64," + b64(t), None),
    ],
    ids=["urlsafe-unpadded", "wrapped", "base64-of-base64", "data-uri"],
)
def test_secret_in_other_base64_shapes_is_redacted_in_the_same_shape(encode: Any, decode: Any) -> None:
    text = "~~~" + "x" * 117 + f" {GITHUB} " + "y" * 60  # `~~~` is `fn5-` in URL-safe base64
    out = guard(REDACT_ALL).check("arguments", None, "up__echo", {"blob": encode(text)})["blob"]
    expected = text.replace(GITHUB, "[REDACTED:github-token]")
    assert out == encode(expected)
    if decode is not None:
        assert decode(out) == expected


def test_redaction_in_base64_that_does_not_round_trip_blocks_instead() -> None:
    # Lines of uneven width decode fine, but cannot be written back as they came.
    encoded = b64(f"key {AWS} and more text to wrap")
    uneven = encoded[:10] + "\n" + encoded[10:30] + "\n" + encoded[30:]
    with pytest.raises(
        DataBlocked, match="blocked by a data rule: aws-key found in the arguments of up__echo"
    ):
        guard(REDACT_ALL).check("arguments", None, "up__echo", {"data": uneven})
    monitored = guard({"detectors": ["aws-key"], "action": "monitor"})
    assert monitored.check("arguments", None, "up__echo", {"data": uneven}) == {"data": uneven}


def test_binary_base64_payload_is_neither_read_as_text_nor_changed() -> None:
    rng = random.Random(7)
    png = b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(200_000))
    result = {"content": [{"type": "image", "data": base64.b64encode(png).decode(), "mimeType": "image/png"}]}
    assert Base64Text.decode(result["content"][0]["data"]) is None
    assert guard(BLOCK_ALL).check("results", None, "up__image", result) is result


def test_card_sent_as_a_json_number_is_redacted_or_blocked() -> None:
    arguments = {"amount": 12, "card": 4111111111111111, "again": 4111111111111111.0, "ok": True}
    assert guard(REDACT_ALL).check("arguments", None, "pay__charge", arguments) == {
        "amount": 12,
        "card": "[REDACTED:card]",
        "again": "[REDACTED:card]",
        "ok": True,
    }
    with pytest.raises(DataBlocked, match="card found in the arguments of pay__charge"):
        guard(BLOCK_ALL).check("arguments", None, "pay__charge", {"card": -5555555555554444})


def test_number_typed_card_in_structured_content_is_found() -> None:
    result = {"content": [], "structuredContent": {"orders": [{"id": 7, "pan": 378282246310005}]}}
    out = guard(REDACT_ALL).check("results", None, "crm__lookup", result)
    assert out["structuredContent"]["orders"] == [{"id": 7, "pan": "[REDACTED:card]"}]


def test_numbers_that_only_look_like_cards_are_left_alone() -> None:
    assert list(BUILTIN["card"].spans(str(TIMESTAMP)))  # as text it would be redacted
    value = {"created": TIMESTAMP, "id": 1234567890123456789, "count": 41, "ratio": 4111111111111111.5}
    assert guard(BLOCK_ALL).check("results", None, "up__echo", value) is value


def test_custom_detector_reads_numbers() -> None:
    rules = guard({"detectors": ["employee-id"], "action": "block"})
    assert rules.check("arguments", None, "x", {"n": 123456}) == {"n": 123456}  # wants `EMP-`
    registry = parse(
        tomlkit.dumps(
            {
                "security": {
                    "detectors": {"pin": "^[0-9]{6}$"},
                    "rules": [{"detectors": ["pin"], "action": "block"}],
                }
            }
        ),
        source="test",
    )
    pin = Guard.from_registry(registry)
    assert pin is not None
    with pytest.raises(DataBlocked, match="pin found"):
        pin.check("arguments", None, "x", {"code": 123456})
    assert pin.check("arguments", None, "x", {"code": 1234567}) == {"code": 1234567}


def test_secret_used_as_an_object_key_is_renamed_or_blocked() -> None:
    value = {"tokens": {AWS: 1, "[REDACTED:aws-key]": 2, f"{GITHUB} note": {"x": 3}}}
    out = guard(REDACT_ALL).check("arguments", None, "up__echo", value)
    assert out == {
        "tokens": {
            "[REDACTED:aws-key] (2)": 1,
            "[REDACTED:aws-key]": 2,
            "[REDACTED:github-token] note": {"x": 3},
        }
    }
    assert list(out["tokens"]) == [
        "[REDACTED:aws-key] (2)",
        "[REDACTED:aws-key]",
        "[REDACTED:github-token] note",
    ]
    with pytest.raises(DataBlocked, match="aws-key found"):
        guard(BLOCK_ALL).check("arguments", None, "up__echo", {AWS: 1})


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


def test_audit_redactor_reads_keys_numbers_base64_and_glued_secrets() -> None:
    redactor = Redactor()
    arguments = {
        "data": f"x_{AWS}",
        AWS: 1,
        "card": 4111111111111111,
        "created": TIMESTAMP,
        "blob": b64(f"key {GITHUB}"),
        "wrapped": base64.encodebytes(("x" * 100 + AWS).encode()).decode(),
        "_meta": {"t": f"token{SLACK}"},
    }
    out = redactor.value(arguments)
    assert out["data"] == "x_[REDACTED:aws-key]" and out["[REDACTED:aws-key]"] == 1
    assert out["card"] == "[REDACTED:card]" and out["created"] == TIMESTAMP
    assert base64.b64decode(out["blob"]).decode() == "key [REDACTED:github-token]"
    assert base64.decodebytes(out["wrapped"].encode()).decode() == "x" * 100 + "[REDACTED:aws-key]"
    assert out["_meta"] == {"t": "token[REDACTED:slack-token]"}
    assert not found_in({k: v for k, v in out.items() if k != "created"})  # as text it looks like a card
    # Results reach the log as JSON text: base64 inside a text is read there, and cut at any length.
    dumped = json.dumps({"content": [{"type": "image", "data": b64(f"key {AWS} then more")}]})
    assert AWS not in json.dumps(json.loads(redactor.text(dumped)))
    text = json.loads(redactor.text(dumped))["content"][0]["data"]
    assert base64.b64decode(text).decode() == "key [REDACTED:aws-key] then more"
    for cut in range(40, len(dumped)):
        assert AWS not in " ".join(decoded_texts(redactor.text(dumped[:cut]))), cut


def decoded_texts(text: str) -> list[str]:
    """The text of every base64 run in `text` (lines broken with a written `\\n` joined), as far as
    it decodes, and of any base64 in those texts."""
    found = []
    for run in re.findall(r"[A-Za-z0-9+/_-]{8,}", text.replace("\\n", "")):
        body = run[: len(run) - len(run) % 4]
        altchars = b"-_" if "-" in body or "_" in body else None
        try:
            decoded = base64.b64decode(body, altchars=altchars).decode("utf-8", "ignore")
        except binascii.Error:
            continue
        found.extend([decoded, *decoded_texts(decoded)])
    return found


# --- property: wherever a secret is put, redact leaves none and block refuses ------------------------

SAMPLES: dict[str, list[Any]] = {
    "aws-key": [AWS, f"x_{AWS}"],
    "github-token": [GITHUB, f"evil__{GITHUB}"],
    "slack-token": [SLACK, f"token{SLACK}"],
    "private-key": [CASES["private-key"][0]],
    "jwt": [JWT, f"x_{JWT}"],
    "bearer": ["Bearer abcdef0123456789", "x_bearer abcdef0123456789"],
    "url-password": ["https://bob:hunter2@git.example.com/repo"],
    "card": [CARD, "x_4111111111111111", 4111111111111111, 5555555555554444.0, 378282246310005],
    "email": ["ann@example.com", "first_last@example.com"],
}
KEYS = st.sampled_from([*SKIPPED_BEFORE, "text", "result", "content", "x"])
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text("abc xyz", max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
ENCODINGS: dict[str, Any] = {
    "plain": lambda s: s,
    "in-text": lambda s: f"see {s} here",
    "base64": b64,
    "base64url": lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    "wrapped": lambda s: base64.encodebytes(s.encode()).decode(),
    "base64-of-base64": lambda s: b64(b64(s)),
    "data-uri": lambda s: "data:text/plain;charset=utf-8;base64," + b64(s),
}


@st.composite
def planted(draw: st.DrawFn) -> tuple[str, Any]:
    """(detector, a JSON value with one of its secrets at a random depth, key and form)."""
    name = draw(st.sampled_from(sorted(SAMPLES)))
    secret = draw(st.sampled_from(SAMPLES[name]))
    value: Any = secret
    if isinstance(secret, str):
        value = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))](secret)
        if draw(st.booleans()):
            value = {value: draw(JUNK)}  # the secret as an object key
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            holder: dict[str, Any] = draw(st.dictionaries(KEYS, JUNK, max_size=3))
            holder[draw(KEYS)] = value
            value = holder
        else:
            items: list[Any] = draw(st.lists(JUNK, max_size=3))
            items.insert(draw(st.integers(0, len(items))), value)
            value = items
    return name, value


PROPERTY_GUARDS = (guard(REDACT_ALL), guard(BLOCK_ALL))


@settings(max_examples=300, deadline=None, database=None)
@given(planted(), st.sampled_from(["arguments", "results", "sampling"]))
def test_property_secrets_anywhere_are_redacted_or_blocked(case: tuple[str, Any], direction: Any) -> None:
    name, value = case
    redacting, blocking = PROPERTY_GUARDS
    out = redacting.check(direction, None, "up__x", value)
    assert not found_in(out), (name, out)
    blocking.check(direction, None, "up__x", out)  # nothing is left, not even inside base64
    with pytest.raises(DataBlocked, match=f"{name} found"):
        blocking.check(direction, None, "up__x", value)
    # The audit log, on arguments (a value) and on results (their JSON text).
    audited = Redactor(detectors=BUILTIN.values())
    logged = audited.value(value)
    assert not found_in(logged), (name, logged)
    blocking.check(direction, None, "up__x", logged)
    text = audited.text(json.dumps(value))
    assert not [d for d in BUILTIN.values() if list(d.spans(text))], (name, text)
    assert not found_in(decoded_texts(text)), (name, text)


# --- through the gateway, in memory ---------------------------------------------------------------


@dataclass
class Guarded:
    """The gateway with personas `strict`, `scrub` and `open` under data rules; its audit db and upstream."""

    gateway: Gateway
    db: Path
    upstream: TestUpstream


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Guarded]:
    db = tmp_path / "guarded-audit.db"
    security = {
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
    config = registry(
        {"up": {}},
        personas={"strict": {}, "scrub": {}, "open": {}},
        audit={"path": str(db)},
        security=security,
    )
    upstream = TestUpstream()
    async with served(config, {"up": upstream}) as gateway:
        yield Guarded(gateway, db, upstream)


async def audit_row(db: Path, needle: str) -> dict[str, Any]:
    """The call row whose arguments contain `needle` (the writer batches: poll for it)."""
    with anyio.fail_after(60):
        while True:
            if db.exists():
                found = list(
                    sqlite_utils.Database(db).query(
                        "select * from events where kind = 'call' and arguments like ?", [f"%{needle}%"]
                    )
                )
                if found:
                    return found[-1]
            await anyio.sleep(0.05)


def upstream_messages(upstream: TestUpstream) -> list[str]:
    return [(c["arguments"] or {}).get("message", "") for c in upstream.calls]


async def call(guarded: Guarded, persona: str, message: str) -> str:
    """The echoed text, or for a refusal `error <code>: <message>`."""
    async with gateway_client(guarded.gateway, persona=persona) as client:
        await client.list_tools()
        try:
            result = await client.call_tool("up__echo", {"message": message})
        except MCPError as exc:
            return f"error {exc.error.code}: {exc.error.message}"
        return str(result.content[0].text)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_block_on_arguments_never_reaches_the_upstream(guarded: Guarded) -> None:
    db = guarded.db
    message = f"deploy with {AWS} marker-args"
    assert (
        await call(guarded, "strict", message)
        == "error -32030: blocked by a data rule: aws-key found in the arguments of up__echo"
    )
    assert not any("marker-args" in m for m in upstream_messages(guarded.upstream))
    row = await audit_row(db, "marker-args")
    assert row["outcome"] == "blocked" and row["persona"] == "strict"
    assert AWS not in row["arguments"] and "[REDACTED:aws-key]" in row["arguments"]
    assert row["findings"] == "arguments: aws-key x1 (aws-key: block)"
    assert await call(guarded, "open", message) == message  # a persona without rules is untouched


@pytest.mark.anyio
async def test_block_on_results_withholds_them_and_records_blocked(guarded: Guarded) -> None:
    db = guarded.db
    message = f"card {CARD} marker-results"
    assert (
        await call(guarded, "strict", message)
        == "error -32030: blocked by a data rule: card found in the result of up__echo"
    )
    # it ran; its result was withheld
    assert any("marker-results" in m for m in upstream_messages(guarded.upstream))
    row = await audit_row(db, "marker-results")
    assert row["outcome"] == "blocked" and row["result"] is None
    assert "4111" not in row["arguments"] and "[REDACTED:card]" in row["arguments"]
    assert "4111" not in (db.read_bytes() + db.with_name(f"{db.name}-wal").read_bytes()).decode("latin-1")
    near_miss = f"card {NOT_CARD} marker-near"
    assert await call(guarded, "strict", near_miss) == near_miss


@pytest.mark.anyio
async def test_redact_and_monitor_through_the_gateway(guarded: Guarded) -> None:
    db = guarded.db
    message = "mail ann@example.com about EMP-123456, not ann@localhost or EMP-12345 marker-redact"
    assert await call(guarded, "scrub", message) == (
        "mail [REDACTED:email] about [REDACTED:employee-id], not ann@localhost or EMP-12345 marker-redact"
    )
    row = await audit_row(db, "marker-redact")
    assert row["outcome"] == "ok" and "ann@example.com" not in row["arguments"]
    # x2: the text is in the result twice, as content and as structured content
    assert row["findings"] == "results: email x2, employee-id x2 (email: redact; employee-id: redact)"

    monitored = f"pay {CARD} marker-monitor"
    assert await call(guarded, "scrub", monitored) == monitored  # monitor records and changes nothing
    row = await audit_row(db, "marker-monitor")
    assert row["findings"] == "arguments: card x1 (card: monitor)"
    assert "4111" not in row["arguments"] and "4111" not in row["result"]  # the audit log is redacted anyway
