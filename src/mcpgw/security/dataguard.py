"""The per-persona data rules: what `[[security.rules]]` do to one direction of traffic.

Owns: `Guard`, which applies the registry's rules, with the detectors of
`mcpgw.detectors`, to one direction of traffic for one persona:

    arguments   a tool call's arguments, before they go to the upstream
    results     a tool result, resource read or prompt, before it reaches the client
    sampling    the messages of a sampling request, before they go to a model

An action is `monitor` (record which detectors fired), `redact` (replace each
match with `[REDACTED:<detector>]`) or `block` (refuse with `DataBlocked`;
the audit record says `blocked`). Values are never echoed in errors or findings.

Every part of a value is read, whatever its key (`data`, `type`, `_meta`
included):
- strings;
- object keys: a redacted key is renamed (`[REDACTED:aws-key]`, with ` (2)`
  added if another entry has that name);
- numbers (ints, and floats whose value is an integer), by the detectors whose
  matches can be all digits: `card` (for a number, only with a card network's
  leading digit, see `detectors._card_network`) and the custom ones. A
  redacted number becomes the marker string;
- the text inside a string that is, as a whole, base64 of UTF-8 text (image
  and audio `data`, a resource's `blob`, a `data:` URI, or anything else;
  recursively).
  Base64 of binary (a PNG) is not UTF-8 and is not read as text; its base64
  characters are still read as a string. A redaction inside base64 is written
  back in the same encoding (alphabet, padding, line width) with the marker in
  the decoded text. When the value cannot be re-encoded exactly as it came (it
  does not round-trip: non-zero padding bits, uneven lines), the redacting
  detector blocks instead: nothing goes on that is neither redacted nor what
  the sender wrote. Base64 inside a longer text is not decoded here.

The sampling code calls `Guard.check_sampling(persona, params)` with the
`sampling/createMessage` params before sending them to a model.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from mcpgw.detectors import (
    BUILTIN,
    Base64Text,
    Detector,
    custom_detectors,
    free_key,
    marker,
    number_text,
)
from mcpgw.errors import DataBlocked

if TYPE_CHECKING:
    from mcpgw.config import Direction, Registry

logger = logging.getLogger("mcpgw.dataguard")

Action = Literal["monitor", "redact", "block"]
_STRENGTH: dict[str, int] = {"monitor": 0, "redact": 1, "block": 2}


# --- applying rules -------------------------------------------------------------------------------

_REMEMBER = 4096
"""Texts longer than this, and object keys, are remembered within one check (see `Scan.done`)."""

Steps = tuple[tuple[Detector, Action], ...]


@dataclass(frozen=True)
class Plan:
    """The detectors that apply to one (direction, persona, name), each with its strongest action."""

    steps: Steps
    numbers: Steps = ()
    """The steps whose detector can match a number's digits (`Detector.digits`)."""
    number_floor: int = 0
    """Numbers below this have fewer digits than any detector in `numbers` matches: not read."""

    @classmethod
    def of(cls, steps: Steps) -> Plan:
        numbers = tuple((d, a) for d, a in steps if d.digits)
        shortest = min((d.min_length for d, _ in numbers), default=0)
        return cls(steps, numbers, 10 ** (shortest - 1) if shortest > 1 else 0)


@dataclass
class Scan:
    counts: dict[str, int]
    blocked: list[str]
    done: dict[str, tuple[str | None, dict[str, int]]] = field(default_factory=dict)
    """Texts already checked in this value (the result, None if unchanged, and the counts): a tool's
    text content and its structured content often carry the same long text, and objects in a list
    the same keys; each is then scanned once."""


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
        plan = Plan.of(tuple((self._detectors[d], a) for d, a in strongest.items())) if strongest else None
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
                audit.note(outcome=audit.Outcome.BLOCKED)
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
        return _string(value, plan, scan, remember=len(value) > _REMEMBER)
    if isinstance(value, dict):
        return _object(value, plan, scan)
    if isinstance(value, list):
        items = [_walk(item, plan, scan) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if plan.numbers and isinstance(value, (int, float)) and abs(value) >= plan.number_floor:
        digits = number_text(value)
        if digits is not None:
            return _number(value, digits, plan, scan)
    return value


def _number(value: float, digits: str, plan: Plan, scan: Scan) -> float | str:
    """A JSON number, or the marker that replaces it."""
    out: float | str = value
    for detector, action in plan.numbers:
        if detector.in_number(digits):
            scan.counts[detector.name] = scan.counts.get(detector.name, 0) + 1
            if action == "block":
                scan.blocked.append(detector.name)
            elif action == "redact" and out is value:
                out = marker(detector.name)
    return out


def _object(value: dict[Any, Any], plan: Plan, scan: Scan) -> dict[Any, Any]:
    out: dict[Any, Any] | None = None
    for index, (key, item) in enumerate(value.items()):
        new_key = _string(key, plan, scan, remember=True) if isinstance(key, str) else key
        new_item = _walk(item, plan, scan)
        if out is None:
            if new_key is key and new_item is item:
                continue
            out = dict(islice(value.items(), index))
        if new_key is not key:
            new_key = free_key(new_key, value, out)
        out[new_key] = new_item
    return value if out is None else out


def _string(text: str, plan: Plan, scan: Scan, *, remember: bool = False) -> str:
    if not remember:
        return _decoded(text, plan, scan)
    known = scan.done.get(text)
    if known is not None:
        out, counts = known
        for name, count in counts.items():
            scan.counts[name] = scan.counts.get(name, 0) + count
        return text if out is None else out
    before = dict(scan.counts)
    out = _decoded(text, plan, scan)
    counts = {name: n - before.get(name, 0) for name, n in scan.counts.items() if n != before.get(name, 0)}
    scan.done[text] = (None if out is text else out, counts)
    return out


def _decoded(text: str, plan: Plan, scan: Scan) -> str:
    """`text` after the plan, and the text inside it when it is base64 of text (see the module doc)."""
    inner = Base64Text.decode(text)
    if inner is not None:
        before = dict(scan.counts)
        checked = _string(inner.text, plan, scan, remember=len(inner.text) > _REMEMBER)
        if checked is not inner.text:
            encoded = inner.reencode(checked)
            if encoded is not None:
                text = encoded
            else:
                scan.blocked.extend(
                    d.name
                    for d, action in plan.steps
                    if action == "redact" and scan.counts.get(d.name, 0) > before.get(d.name, 0)
                )
    return _text(text, plan.steps, scan)


def _text(text: str, steps: Steps, scan: Scan) -> str:
    out = text
    for detector, action in steps:
        if action == "redact":
            out, count = detector.sub(out)
        else:
            count = sum(1 for _ in detector.spans(out))
            if count and action == "block":
                scan.blocked.append(detector.name)
        if count:
            scan.counts[detector.name] = scan.counts.get(detector.name, 0) + count
    return text if out == text else out
