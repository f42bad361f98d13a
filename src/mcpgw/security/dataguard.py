"""The per-persona data rules: what `[[security.rules]]` do to one direction of traffic.

Owns: `Guard`, which applies the registry's rules, with the detectors of
`mcpgw.detectors`, to one direction of traffic for one persona:

    arguments   a tool call's arguments, before they go to the upstream
    results     a tool result, resource read or prompt, before it reaches the client
    sampling    the messages of a sampling request, before they go to a model

An action is `monitor` (record which detectors fired), `redact` (replace each
match with `[REDACTED:<detector>]`) or `block` (refuse with `DataBlocked`;
the audit record says `blocked`). Values are never echoed in errors or findings.

The sampling code calls `Guard.check_sampling(persona, params)` with the
`sampling/createMessage` params before sending them to a model.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mcpgw.detectors import BUILTIN, Detector, custom_detectors
from mcpgw.errors import DataBlocked

if TYPE_CHECKING:
    from mcpgw.config import Direction, Registry

logger = logging.getLogger("mcpgw.dataguard")

Action = Literal["monitor", "redact", "block"]
_STRENGTH: dict[str, int] = {"monitor": 0, "redact": 1, "block": 2}


# --- applying rules -------------------------------------------------------------------------------

_REMEMBER = 4096
"""Texts longer than this are remembered within one check (see `Scan.done`)."""
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
    done: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)
    """Long texts already checked in this value: a tool's text content and its structured content
    often carry the same text, which is then scanned once."""


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
    remembered = scan.done.get(text) if len(text) > _REMEMBER else None
    if remembered is not None:
        out, counts = remembered
        for name, count in counts.items():
            scan.counts[name] = scan.counts.get(name, 0) + count
        return out
    out = text
    counts = {}
    for detector, action in plan.steps:
        if action == "redact":
            out, count = detector.sub(out)
        else:
            count = sum(1 for _ in detector.spans(out))
            if count and action == "block":
                scan.blocked.append(detector.name)
        if count:
            counts[detector.name] = count
            scan.counts[detector.name] = scan.counts.get(detector.name, 0) + count
    out = text if out == text else out
    if len(text) > _REMEMBER:
        scan.done[text] = (out, counts)
    return out
