"""A persona in words: what it can and cannot do, read from its rules alone (no server is started).

Owns `explain`, which turns one `[personas.NAME]` table (and the persona's
`[sampling.personas.NAME]` scope) into two lists of plain sentences, `can` and
`cannot`, that say the same as the rules `catalog.personas` enforces: which
servers, which tools (by name or pattern, with deny winning), read-only, which
resources and prompts (by the same least-privilege default), hidden fixed
arguments and narrowed ones, search mode, and sampling policy and budgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcpgw.catalog.personas import prompt_rules, resource_rules
from mcpgw.config import Filter, Registry
from mcpgw.errors import UnknownPersona


@dataclass
class Explanation:
    persona: str
    description: str | None
    can: list[str] = field(default_factory=list)
    cannot: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "persona": self.persona,
            "description": self.description,
            "can": self.can,
            "cannot": self.cannot,
        }


def _names(patterns: list[str]) -> str:
    return ", ".join(patterns)


def _everything(patterns: list[str]) -> bool:
    return "*" in patterns


def _filter(what: str, rules: Filter, out: Explanation) -> None:
    if _everything(rules.allow):
        out.can.append(f"read every {what} of its servers")
    elif rules.allow:
        out.can.append(f"use only these {what}s: {_names(rules.allow)}")
    else:
        out.cannot.append(f"use any {what}")
    if rules.deny:
        out.cannot.append(f"use {what}s matching {_names(rules.deny)} (deny wins over allow)")


def explain(registry: Registry, name: str) -> Explanation:
    """What persona `name` can and cannot do (`UnknownPersona` when the registry has no such persona)."""
    persona = registry.personas.get(name)
    if persona is None:
        known = ", ".join(registry.personas) or "none are configured"
        raise UnknownPersona(f"unknown persona {name!r} (known: {known})")
    out = Explanation(persona=name, description=persona.description)
    if persona.servers is None:
        out.can.append("see every server in the registry")
    elif persona.servers:
        out.can.append(f"see only these servers: {_names(persona.servers)}")
        others = [s for s in registry.servers if s not in persona.servers]
        if others:
            out.cannot.append(f"see the other servers: {_names(others)}")
    else:
        out.cannot.append("see any server")
    if _everything(persona.allow):
        out.can.append(
            "call every tool of its servers" + (" that is annotated read-only" * persona.read_only)
        )
    elif persona.allow:
        these = "this tool" if len(persona.allow) == 1 else "these tools"
        out.can.append(f"call only {these}: {_names(persona.allow)}")
    else:
        out.cannot.append("call any tool")
    if persona.deny:
        out.cannot.append(f"call tools matching {_names(persona.deny)} (deny wins over allow)")
    if persona.read_only:
        out.cannot.append(
            "call a tool that is not annotated read-only, or is annotated destructive "
            "(tools without annotations are hidden)"
        )
    else:
        out.can.append("call tools that change things, when its tool rules allow them")
    for tool, override in persona.tools.items():
        shown = override.name or tool
        if override.fixed:
            out.cannot.append(
                f"choose {_names(sorted(override.fixed))} of {shown}: fixed, and hidden from it"
            )
        if override.narrow:
            out.cannot.append(f"pass {shown} values outside the narrowed {_names(sorted(override.narrow))}")
        if override.name:
            out.can.append(f"call {tool} under the name {override.name}")
    _filter("resource", resource_rules(persona), out)
    _filter("prompt", prompt_rules(persona), out)
    if persona.catalog == "search":
        out.can.append("search its tools and call them through search_tools and call_tool (search mode)")
    _sampling(registry, name, out)
    return out


def _sampling(registry: Registry, name: str, out: Explanation) -> None:
    scope = registry.sampling.personas.get(name)
    if scope is None:
        return
    if scope.policy == "deny":
        out.cannot.append("have its servers' sampling requests answered (sampling policy deny)")
    elif scope.policy is not None:
        out.can.append(f"have its servers' sampling requests answered ({scope.policy})")
    if scope.routes is not None:
        out.can.append(f"use only these model routes: {_names(scope.routes) or 'none'}")
    budget = [
        *([f"{scope.tokens_per_day} tokens"] if scope.tokens_per_day else []),
        *([f"${scope.usd_per_day:g}"] if scope.usd_per_day else []),
    ]
    if budget:
        out.cannot.append(f"spend more than {' or '.join(budget)} a day on models")
