"""Sensitive-data detectors and the per-persona data rules that act on what they find.

Owns: the one set of detectors in mcpgw (cloud keys, GitHub and Slack tokens,
private keys, JWTs, bearer tokens, passwords in URLs, payment card numbers with
a Luhn check, e-mail addresses, and the registry's custom regexes), used both
by `redact` for the audit log and by `Guard`, which applies the `[[security.rules]]`
of the registry to one direction of traffic for one persona:

    arguments   a tool call's arguments, before they go to the upstream
    results     a tool result, resource read or prompt, before it reaches the client
    sampling    the messages of a sampling request, before they go to a model

An action is `monitor` (record which detectors fired), `redact` (replace each
match with `[REDACTED:<detector>]`) or `block` (refuse with `DataBlocked`;
the audit record says `blocked`). Values are never echoed in errors or findings.

Why our own detectors and not a library: detect-secrets (the maintained
candidate) scans files line by line through a global plugin registry, returns
the matched strings without positions, pulls in requests and PyYAML, and has no
card or e-mail detector; what is needed here is a few compiled patterns that
replace spans inside JSON values on the call path.

The sampling code calls `Guard.check_sampling(persona, params)` with the
`sampling/createMessage` params before sending them to a model.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mcpgw.errors import DataBlocked

if TYPE_CHECKING:
    from mcpgw.config import Direction, Registry

logger = logging.getLogger("mcpgw.dataguard")

Action = Literal["monitor", "redact", "block"]
_STRENGTH: dict[str, int] = {"monitor": 0, "redact": 1, "block": 2}


def marker(name: str) -> str:
    return f"[REDACTED:{name}]"


@dataclass(frozen=True)
class Detector:
    """A named pattern, with an optional check a match must also pass (a checksum, a decode)."""

    name: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        for match in self.pattern.finditer(text):
            if self.check is None or self.check(match.group()):
                yield match.span()

    def found(self, text: str) -> bool:
        return next(self.spans(text), None) is not None

    def sub(self, text: str) -> tuple[str, int]:
        """`text` with every match replaced by this detector's marker, and how many there were."""
        if self.check is None:
            return self.pattern.subn(marker(self.name), text)
        count = 0
        check = self.check

        def replace(match: re.Match[str]) -> str:
            nonlocal count
            if check(match.group()):
                count += 1
                return marker(self.name)
            return match.group()

        return self.pattern.sub(replace, text), count


def luhn(candidate: str) -> bool:
    """The payment-card checksum over the digits of `candidate` (13 to 19 of them)."""
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _jwt_header(candidate: str) -> bool:
    """A JWT's first segment decodes to a JSON object naming its algorithm."""
    head = candidate.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


SECRET_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private-key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
    ),
    Detector("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), _jwt_header),
    Detector("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    Detector("aws-key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    Detector("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    Detector("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    Detector("url-password", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")),
)
"""Credentials: always redacted in the audit log."""

CARD = Detector("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), luhn)
EMAIL = Detector(
    "email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
)
BUILTIN: dict[str, Detector] = {d.name: d for d in (*SECRET_DETECTORS, CARD, EMAIL)}
"""Every built-in detector by name; `[security.detectors]` adds custom ones."""

AUDIT_ALWAYS: tuple[Detector, ...] = (*SECRET_DETECTORS, CARD)
"""What the audit log never stores, whatever the rules say."""


def custom_detectors(patterns: Mapping[str, str]) -> dict[str, Detector]:
    return {name: Detector(name, re.compile(pattern)) for name, pattern in patterns.items()}


# --- applying rules -------------------------------------------------------------------------------

_SKIPPED_KEYS = frozenset({"type", "mimeType", "blob", "data", "_meta", "resultType"})
"""Keys whose values are not text a detector should read (types, base64 payloads, metadata)."""


@dataclass(frozen=True)
class Plan:
    """The detectors that apply to one (direction, persona, name), each with its strongest action."""

    steps: tuple[tuple[Detector, Action], ...]


@dataclass
class Scan:
    counts: dict[str, int]
    blocked: list[str]


class Guard:
    """The registry's data rules, resolved per (direction, persona, name) once and then cached."""

    def __init__(self, rules: Iterable[Any], detectors: Mapping[str, Detector]) -> None:
        self._rules = list(rules)
        self._detectors = dict(detectors)
        self._plans: dict[tuple[str, str | None, str], Plan | None] = {}

    @classmethod
    def from_registry(cls, registry: Registry) -> Guard | None:
        """None when there are no rules: the call path then does no work at all."""
        security = registry.security
        if not security.rules:
            return None
        return cls(security.rules, {**BUILTIN, **custom_detectors(security.detectors)})

    def detectors_in_rules(self) -> list[Detector]:
        names = {name for rule in self._rules for name in rule.detectors}
        return [self._detectors[name] for name in sorted(names)]

    def plan(self, direction: Direction, persona: str | None, name: str) -> Plan | None:
        key = (direction, persona, name)
        if key in self._plans:
            return self._plans[key]
        strongest: dict[str, Action] = {}
        for rule in self._rules:
            if direction not in rule.directions:
                continue
            if rule.personas is not None and persona not in rule.personas:
                continue
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.tools):
                continue
            for detector in rule.detectors:
                if _STRENGTH[rule.action] >= _STRENGTH[strongest.get(detector, "monitor")]:
                    strongest[detector] = rule.action
        plan = Plan(tuple((self._detectors[d], a) for d, a in strongest.items())) if strongest else None
        self._plans[key] = plan
        return plan

    def check(self, direction: Direction, persona: str | None, name: str, value: Any) -> Any:
        """`value` after the rules for this direction: unchanged, redacted, or `DataBlocked` raised.

        Findings go to the current audit step; a block also sets its outcome to `blocked`.
        """
        plan = self.plan(direction, persona, name)
        if plan is None:
            return value
        scan = Scan(counts={}, blocked=[])
        checked = _walk(value, plan, scan)
        if scan.counts:
            from mcpgw import audit

            summary = ", ".join(f"{d} x{n}" for d, n in sorted(scan.counts.items()))
            actions = {d.name: a for d, a in plan.steps}
            detail = "; ".join(f"{d}: {actions[d]}" for d in sorted(scan.counts))
            step = audit.current()
            previous = step.findings if step is not None and step.findings else None
            note = f"{direction}: {summary} ({detail})"
            audit.note(findings=f"{previous}; {note}" if previous else note)
            if scan.blocked:
                audit.note(outcome="blocked")
                where = {
                    "arguments": "the arguments of",
                    "results": "the result of",
                    "sampling": "a sampling request from",
                }[direction]
                found = ", ".join(sorted(set(scan.blocked)))
                logger.warning("blocked %s %s for persona %s: %s found", where, name, persona, found)
                raise DataBlocked(f"blocked by a data rule: {found} found in {where} {name}")
        return checked

    def check_sampling(
        self, persona: str | None, params: dict[str, Any], *, name: str = "*"
    ) -> dict[str, Any]:
        """The `sampling/createMessage` params after the `sampling` rules (messages and system prompt)."""
        checked: dict[str, Any] = self.check("sampling", persona, name, params)
        return checked


def _walk(value: Any, plan: Plan, scan: Scan) -> Any:
    if isinstance(value, str):
        return _text(value, plan, scan)
    if isinstance(value, dict):
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            if key in _SKIPPED_KEYS:
                continue
            new = _walk(item, plan, scan)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        return value if changed is None else changed
    if isinstance(value, list):
        items = [_walk(item, plan, scan) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _text(text: str, plan: Plan, scan: Scan) -> str:
    out = text
    for detector, action in plan.steps:
        if action == "redact":
            out, count = detector.sub(out)
        else:
            count = sum(1 for _ in detector.spans(out))
            if count and action == "block":
                scan.blocked.append(detector.name)
        if count:
            scan.counts[detector.name] = scan.counts.get(detector.name, 0) + count
    return text if out == text else out
