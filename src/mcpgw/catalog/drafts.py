"""Persona drafts: what a model is shown of the catalog, and the guard rails its proposal passes.

Owns: the catalog facts a drafting model sees (names, descriptions, annotations,
server descriptions: never schemas, arguments, results, registry entries or
secrets), reading the model's answer as a proposal, and the deterministic rules
applied after the model, whatever it said:

- only names the catalog holds, written exactly (glob characters escaped), never patterns;
- a tool annotated destructive, or one that can send data out, only when the job names
  that kind of action (and not in a clause that rules it out), flagged for review;
- the result compared with the persona's current view, so access it would add is shown;
- `read_only` set whenever every tool kept is read-only.

Pure functions over a `Catalog` and the registry: the model call is `mcpgw.sampling.drafting`'s.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mcpgw.catalog import Catalog
from mcpgw.catalog.personas import build_view
from mcpgw.config import PersonaConfig, Registry
from mcpgw.errors import DraftError

ItemKind = Literal["tool", "resource", "prompt"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DESTRUCTIVE_WORDS = _words(
    "delete remove destroy drop purge erase wipe truncate overwrite reset merge kill terminate "
    "revoke close archive uninstall cancel force rm unlink"
)
SEND_WORDS = _words(
    "send email mail post publish upload share notify message tweet webhook forward export sms invite "
    "reply broadcast"
)
WRITE_WORDS = _words(
    "add create update edit write set label comment assign push commit open insert put patch modify "
    "change tag move rename run execute deploy approve transfer pay book order"
)
NEGATIONS = _words("never not no dont don't without nor avoid mustn't cannot can't except")
GLOB = re.compile(r"[*?\[\]]")
DESCRIPTION_CHARS = 400
"""A description beyond this is cut before it is sent: the names and gist are what a draft needs."""


def stem(word: str) -> str:
    """A crude stem, enough to match `deletes`, `deleting`, `deletion` with `delete`."""
    word = word.lower().strip("'")
    for suffix in ("ing", "ion", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


_STEMS = {kind: frozenset(stem(w) for w in words) for kind, words in
          (("destructive", DESTRUCTIVE_WORDS), ("send", SEND_WORDS), ("write", WRITE_WORDS))}  # fmt: skip


def name_words(name: str) -> set[str]:
    """The stems of a tool's own name (its namespace dropped), split on `_ - .` and camelCase."""
    bare = name.split("__", 1)[-1]
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", bare)
    return {stem(w) for w in re.split(r"[^A-Za-z0-9']+", spaced) if w}


@dataclass(frozen=True)
class Job:
    """The job text read for actions: what it names, and what it rules out (after never/not/no)."""

    text: str
    named: frozenset[str]
    ruled_out: frozenset[str]

    @classmethod
    def read(cls, text: str) -> Job:
        named: set[str] = set()
        ruled_out: set[str] = set()
        for clause in re.split(r"[.;:,!?\n()]|\bbut\b|\bonly\b", text.lower()):
            negated = False
            for word in re.findall(r"[a-z']+", clause):
                if word in NEGATIONS:
                    negated = True
                    continue
                (ruled_out if negated else named).add(stem(word))
        return cls(text, frozenset(named), frozenset(ruled_out))


def is_read_only(tool: Mapping[str, Any]) -> bool:
    annotations = tool.get("annotations") or {}
    return annotations.get("readOnlyHint") is True and annotations.get("destructiveHint") is not True


def risks(tool: Mapping[str, Any]) -> list[str]:
    """`destructive` and/or `sends out`, from the tool's annotations and the verbs of its name.

    A read-only tool carries neither. A tool without annotations is not presumed either (MCP's
    defaults would make every unannotated tool both): its name's verbs decide.
    """
    if is_read_only(tool):
        return []
    annotations = tool.get("annotations") or {}
    words = name_words(str(tool.get("name", "")))
    found = []
    if annotations.get("destructiveHint") is True or words & _STEMS["destructive"]:
        found.append("destructive")
    if annotations.get("openWorldHint") is True or words & _STEMS["send"]:
        found.append("sends out")
    return found


def access(tool: Mapping[str, Any]) -> str:
    """`read`, `write`, or the tool's risks (`destructive`, `sends out`)."""
    found = risks(tool)
    if found:
        return ", ".join(found)
    return "read" if is_read_only(tool) else "write"


def _said(name: str, stems: set[str]) -> str:
    """The words of a tool's name whose stems are in `stems`, as the name spells them."""
    bare = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name.split("__", 1)[-1])
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9']+", bare) if w and stem(w) in stems]
    return "/".join(dict.fromkeys(words))


def gate(tool: Mapping[str, Any], job: Job) -> str | None:
    """Why a risky tool may not be in this job's persona, or None when it may (or is not risky)."""
    found = risks(tool)
    if not found:
        return None
    name = str(tool.get("name", ""))
    words = name_words(name)
    verbs = words & (_STEMS["destructive"] | _STEMS["send"] | _STEMS["write"])
    if verbs & job.ruled_out:
        return f"{', '.join(found)}, and the job rules out {_said(name, verbs & job.ruled_out)}"
    for risk in found:
        vocabulary = _STEMS["destructive" if risk == "destructive" else "send"]
        own = words & vocabulary
        if own:
            if not own & job.named:
                return f"{risk}, and the job does not ask to {_said(name, own)}"
        elif not (verbs & job.named or vocabulary & job.named):
            return f"{risk} (annotated), and the job names no such action"
    return None


# --- what the model is shown ------------------------------------------------------------------


def _cut(value: Any) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 1] + "…"


HINTS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def facts(catalog: Catalog, servers: Mapping[str, str | None]) -> dict[str, Any]:
    """What the drafting model is told: every served item by name, its description and annotations,
    and each server's description. No schema (defaults and examples are argument values), no
    arguments, results, registry entries or secrets."""
    tools = []
    for tool in catalog.tools:
        annotations = {k: v for k, v in (tool.get("annotations") or {}).items() if k in HINTS}
        entry: dict[str, Any] = {"name": tool["name"], "description": _cut(tool.get("description"))}
        if annotations:
            entry["annotations"] = annotations
        tools.append(entry)
    return {
        "servers": [{"name": name, "description": _cut(text)} for name, text in servers.items()],
        "tools": tools,
        "resources": [
            {"uri": r["uri"], "name": r.get("name"), "description": _cut(r.get("description"))}
            for r in catalog.resources
        ]
        + [
            {"uri": t["uriTemplate"], "name": t.get("name"), "description": _cut(t.get("description"))}
            for t in catalog.resource_templates
        ],
        "prompts": [{"name": p["name"], "description": _cut(p.get("description"))} for p in catalog.prompts],
    }


# --- the proposal and the draft ---------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    kind: ItemKind
    name: str
    reason: str
    access: str = "read"
    review: bool = False
    """A destructive or send-out tool the job asked for: a person should look at it."""
    widens: bool = False
    """Access the persona does not have today."""


@dataclass(frozen=True)
class Dropped:
    kind: str
    name: str
    why: str


@dataclass
class Draft:
    persona: str
    job: str
    description: str
    items: list[Item] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    exists: bool = False

    def names(self, kind: ItemKind) -> list[str]:
        return [item.name for item in self.items if item.kind == kind]

    @property
    def read_only(self) -> bool:
        return all(item.access == "read" for item in self.items if item.kind == "tool")

    @property
    def widens(self) -> list[Item]:
        return [item for item in self.items if item.widens]

    def as_dict(self) -> dict[str, Any]:
        return {
            "persona": self.persona,
            "job": self.job,
            "description": self.description,
            "read_only": self.read_only,
            "items": [asdict(item) for item in self.items],
            "dropped": [asdict(d) for d in self.dropped],
            "widens": [item.name for item in self.widens],
        }


def exact(name: str) -> str:
    """`name` as a persona rule that matches it and nothing else (glob characters bracketed)."""
    return GLOB.sub(lambda m: f"[{m[0]}]", name)


def parse(answer: str) -> dict[str, Any]:
    """The model's answer as a proposal object (`DraftError` when it is not one)."""
    text = answer.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced[1].strip()
    start, end = text.find("{"), text.rfind("}")
    try:
        value = json.loads(text[start : end + 1]) if start >= 0 else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or not any(k in value for k in ("tools", "resources", "prompts")):
        shown = " ".join(answer.split())[:80]
        raise DraftError(
            f'the model\'s answer is not a persona proposal (a JSON object with "tools"): {shown!r}'
        )
    return value


def _entries(value: Any, key: str) -> list[tuple[str, str]]:
    """`[(name, reason)]` from a list of strings or of objects with `key` (or `name`) and `reason`."""
    out: list[tuple[str, str]] = []
    for entry in value if isinstance(value, list) else []:
        if isinstance(entry, str):
            out.append((entry, ""))
        elif isinstance(entry, dict):
            name = entry.get(key, entry.get("name"))
            if isinstance(name, str):
                out.append((name, " ".join(str(entry.get("reason") or "").split())[:200]))
    return out


def guard(
    proposal: Mapping[str, Any], *, persona: str, job: str, catalog: Catalog, registry: Registry
) -> Draft:
    """The proposal after the guard rails: what is kept (and why), what is dropped (and why)."""
    reading = Job.read(job)
    description = " ".join(str(proposal.get("description") or "").split())[:200]
    draft = Draft(persona=persona, job=job, description=description, exists=persona in registry.personas)
    for key in proposal:
        if key not in ("tools", "resources", "prompts", "description", "read_only"):
            value = json.dumps(proposal[key])[:60]
            draft.dropped.append(Dropped("rule", f"{key} = {value}", "not part of a proposal: ignored"))
    tools = {t["name"]: t for t in catalog.tools}
    resources = {r["uri"] for r in catalog.resources} | {t["uriTemplate"] for t in catalog.resource_templates}
    prompts = {p["name"] for p in catalog.prompts}
    seen: set[tuple[str, str]] = set()
    wanted: list[tuple[ItemKind, str, str, str]] = [
        *(("tool", n, r, "name") for n, r in _entries(proposal.get("tools"), "name")),
        *(("resource", n, r, "uri") for n, r in _entries(proposal.get("resources"), "uri")),
        *(("prompt", n, r, "name") for n, r in _entries(proposal.get("prompts"), "name")),
    ]
    for kind, name, reason, _ in wanted:
        if (kind, name) in seen:
            continue
        seen.add((kind, name))
        known = tools if kind == "tool" else resources if kind == "resource" else prompts
        if name not in known:
            why = (
                "a pattern, not a name: drafts list exact names"
                if GLOB.search(name)
                else "not in the catalog"
            )
            draft.dropped.append(Dropped(kind, name, why))
            continue
        if kind != "tool":
            draft.items.append(Item(kind, name, reason))
            continue
        tool = tools[name]
        refused = gate(tool, reading)
        if refused is not None:
            draft.dropped.append(Dropped(kind, name, refused))
            continue
        draft.items.append(Item(kind, name, reason, access=access(tool), review=bool(risks(tool))))
    return _mark_widening(draft, catalog, registry)


def _mark_widening(draft: Draft, catalog: Catalog, registry: Registry) -> Draft:
    """Each item the current persona does not reach, marked: a draft never widens one unseen."""
    current = registry.personas.get(draft.persona)
    if current is None:
        return draft
    denies = {"tool": current.deny, "resource": current.resources.deny, "prompt": current.prompts.deny}
    for item in list(draft.items):
        hit = [p for p in denies[item.kind] if fnmatch.fnmatchcase(item.name, p)]
        if hit:
            draft.items.remove(item)
            draft.dropped.append(Dropped(item.kind, item.name, f"the persona's deny rule {hit[0]!r} (kept)"))
    view = build_view(draft.persona, current, catalog, registry)
    reached = {
        "tool": {entry.target for entry in view.entries.values()},
        "resource": {r["uri"] for r in view.resources} | {t["uriTemplate"] for t in view.resource_templates},
        "prompt": set(view.prompt_names),
    }
    draft.items = [
        Item(i.kind, i.name, i.reason, i.access, i.review, widens=i.name not in reached[i.kind])
        for i in draft.items
    ]
    return draft


def persona_table(draft: Draft, catalog: Catalog, current: PersonaConfig | None) -> dict[str, Any]:
    """The `[personas.NAME]` keys a draft sets (every other key of the current persona is kept)."""
    servers: set[str] = set()
    for item in draft.items:
        if item.kind == "tool":
            servers.add(catalog.tool_routes[item.name].upstream.name)
        elif item.kind == "prompt":
            servers.add(catalog.prompt_routes[item.name].upstream.name)
        else:
            route = catalog.resource_routes.get(item.name) or catalog.template_routes[item.name]
            servers.add(route.upstream.name)
    table: dict[str, Any] = {}
    # A person's description of an existing persona is kept; the model's is only a suggestion.
    description = (current.description if current else None) or draft.description
    if description:
        table["description"] = description
    table["servers"] = sorted(servers)
    table["allow"] = [exact(n) for n in draft.names("tool")]
    table["read_only"] = draft.read_only
    table["resources"] = {"allow": [exact(n) for n in draft.names("resource")]}
    table["prompts"] = {"allow": [exact(n) for n in draft.names("prompt")]}
    return table
