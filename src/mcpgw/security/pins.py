"""Pinned tool definitions: the lock file, its comparison with what upstreams serve, and the policy.

Owns: the lock file next to the registry (`servers.lock` for `servers.toml`,
or `[security] lock`), a TOML file meant to be read and diffed by people: per
server, per tool (and prompt and resource template) the sha256 digest of the
canonical JSON of its definition (tools: name, description, inputSchema,
outputSchema, annotations; prompts: name, description, arguments; templates:
uriTemplate, name, description, mimeType), its description, and the
definition itself as indented JSON, so `mcpgw pin --diff` can show old and new
text. Also: `Trust`, the filter the gateway applies to every catalog it builds.

Policy, by `[gateway] mode`:

    status of an item             prototype                     production
    pinned, digest matches        served                        served
    changed since its pin         served, warning logged+audit  withheld until `pin --approve`
    new (server pinned, item not) served, warning logged+audit  withheld until `pin --approve`
    server not in the lock        served, warning logged+audit  withheld until `pin`
    no lock file at all           served, one warning           everything withheld until `pin`
    poisoning findings            warning logged+audit          withheld unless its pin matches

A matching pin is the approval: `pin` never pins a flagged item on its own;
`pin --approve` does, after a person has read `pin --diff`. The running gateway
watches the lock file, so an approval takes effect (and is announced with
list_changed) without a restart. Plain resources are scanned and reported but
not pinned: their lists are often data (files, rows), not definitions.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import tomlkit

from mcpgw.audit import Kind, Outcome
from mcpgw.catalog import Catalog
from mcpgw.catalog.personas import build_view
from mcpgw.config import Mode, Registry
from mcpgw.config.edit import write_atomically
from mcpgw.errors import ConfigError, RegistryError
from mcpgw.security import poisoning

if TYPE_CHECKING:
    from mcpgw.audit import AuditLog
    from mcpgw.core.gateway import Gateway
    from mcpgw.upstream import Upstream

logger = logging.getLogger("mcpgw.pins")

PINNED_LISTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tools": ("name", ("name", "description", "inputSchema", "outputSchema", "annotations")),
    "prompts": ("name", ("name", "description", "arguments")),
    "resource_templates": ("uriTemplate", ("uriTemplate", "name", "description", "mimeType")),
}
"""List name -> (the key naming an item, the keys its digest covers)."""

KIND_OF = {"tools": "tool", "prompts": "prompt", "resource_templates": "resource template"}

LOCK_HEADER = """\
# mcpgw lock file: pinned definitions of the upstreams' tools, prompts and resource templates.
# Written by `mcpgw pin`; review changes with `mcpgw pin --diff`, accept them with `mcpgw pin --approve`.
# Each entry: sha256 of the canonical JSON of the definition, its description, and the definition.
"""

Status = Literal["pinned", "changed", "new", "unpinned", "no-lock"]


@dataclass(frozen=True)
class Pin:
    sha256: str
    description: str
    definition: str
    """Indented JSON with sorted keys: the text `--diff` compares."""


ServerPins = dict[str, dict[str, Pin]]
"""List name -> item name -> pin."""
Lock = dict[str, ServerPins]
"""Server name -> its pins."""


def definition(list_name: str, item: Mapping[str, Any]) -> dict[str, Any]:
    _, keys = PINNED_LISTS[list_name]
    return {key: item[key] for key in keys if key in item}


def digest(defn: Mapping[str, Any]) -> str:
    canonical = json.dumps(defn, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def pin_of(list_name: str, item: Mapping[str, Any]) -> Pin:
    defn = definition(list_name, item)
    # Invisible characters are written as JSON escapes: a reviewer of the file or a diff sees them.
    text = poisoning.json_escaped(json.dumps(defn, sort_keys=True, indent=2, ensure_ascii=False))
    return Pin(digest(defn), poisoning.shown(str(defn.get("description") or "")), text)


def snapshot(lists: Mapping[str, list[dict[str, Any]]]) -> ServerPins:
    """The pins of one upstream's current lists."""
    pins: ServerPins = {}
    for list_name, (key, _) in PINNED_LISTS.items():
        pins[list_name] = {
            str(item.get(key, "")): pin_of(list_name, item) for item in lists.get(list_name, [])
        }
    return pins


def lock_path(registry: Registry, registry_path: Path | None) -> Path:
    """`[security] lock` (relative to the registry's directory), else the registry's name with `.lock`."""
    base = registry_path if registry_path is not None else Path("servers.toml")
    if registry.security.lock:
        configured = Path(registry.security.lock).expanduser()
        return configured if configured.is_absolute() else base.parent / configured
    return base.with_suffix(".lock")


# --- the file ---------------------------------------------------------------------------------------


def read_lock(path: Path) -> Lock | None:
    """The lock file's pins, None when there is none; a damaged or edited entry is a `ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    try:
        data = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from exc
    lock: Lock = {}
    servers = data.get("servers", {})
    if not isinstance(servers, dict) or set(data) - {"servers"}:
        raise ConfigError(
            "expected only [servers.NAME.tools|prompts|resource_templates] tables", file=str(path)
        )
    for server, lists in servers.items():
        if not isinstance(lists, dict) or set(lists) - set(PINNED_LISTS):
            raise ConfigError("unknown table", file=str(path), key=f"servers.{server}")
        lock[server] = {}
        for list_name in PINNED_LISTS:
            entries = lists.get(list_name, {})
            lock[server][list_name] = {}
            for name, entry in entries.items():
                key = f"servers.{server}.{list_name}.{name}"
                try:
                    pin = Pin(
                        str(entry["sha256"]), str(entry.get("description", "")), str(entry["definition"])
                    )
                    parsed = json.loads(pin.definition)
                    recomputed = digest(parsed)
                    described = poisoning.shown(str(parsed.get("description") or ""))
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise ConfigError("needs sha256 and a JSON definition", file=str(path), key=key) from None
                if recomputed != pin.sha256:
                    raise ConfigError(
                        "sha256 does not match the definition (edited by hand?); "
                        "re-pin with `mcpgw pin --approve`",
                        file=str(path),
                        key=key,
                    )
                if described != pin.description:
                    raise ConfigError("description does not match the definition", file=str(path), key=key)
                lock[server][list_name][name] = pin
    return lock


def write_lock(path: Path, lock: Lock) -> None:
    """Write the whole lock, sorted so that diffs between versions are minimal; atomically."""
    doc = tomlkit.document()
    for line in LOCK_HEADER.splitlines():
        doc.add(tomlkit.comment(line.removeprefix("# ")))
    servers = tomlkit.table(is_super_table=True)
    for server in sorted(lock):
        lists = tomlkit.table(is_super_table=True)
        for list_name in PINNED_LISTS:
            entries = lock[server].get(list_name, {})
            if not entries:
                continue
            table = tomlkit.table(is_super_table=True)
            for name in sorted(entries):
                pin = entries[name]
                entry = tomlkit.table()
                entry.add("sha256", pin.sha256)
                entry.add("description", tomlkit.string(pin.description, multiline="\n" in pin.description))
                entry.add("definition", tomlkit.string(pin.definition, multiline=True))
                table.add(name, entry)
            lists.add(list_name, table)
        servers.add(server, lists)
    doc.add("servers", servers)
    write_atomically(path, tomlkit.dumps(doc))


# --- comparing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    server: str
    list_name: str
    name: str
    status: Literal["new", "changed", "removed"]
    old: Pin | None
    new: Pin | None

    def __str__(self) -> str:
        return f"{self.server}: {KIND_OF[self.list_name]} {self.name!r} {self.status}"

    def diff(self) -> str:
        """A unified diff of the old and new definition text."""
        old = self.old.definition.splitlines(keepends=True) if self.old else []
        new = self.new.definition.splitlines(keepends=True) if self.new else []
        label = f"{self.server}/{self.list_name}/{self.name}"
        lines = difflib.unified_diff(old, new, f"pinned {label}", f"served {label}", lineterm="\n")
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def changes(server: str, pinned: ServerPins | None, current: ServerPins) -> list[Change]:
    found: list[Change] = []
    for list_name in PINNED_LISTS:
        before = (pinned or {}).get(list_name, {})
        after = current.get(list_name, {})
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name), after.get(name)
            if old is None:
                found.append(Change(server, list_name, name, "new", None, new))
            elif new is None:
                found.append(Change(server, list_name, name, "removed", old, None))
            elif old.sha256 != new.sha256:
                found.append(Change(server, list_name, name, "changed", old, new))
    return found


def approve(
    server: str, pinned: ServerPins | None, current: ServerPins, selected: Mapping[str, Collection[str]]
) -> tuple[ServerPins, list[Change], list[Change]]:
    """`pinned` with only the selected items (list name -> item names) brought up to date.

    Returns the new pins, the changes accepted and the changes still pending. A selected item
    that is pinned and unchanged is accepted as is; one neither served nor pinned is a
    `RegistryError` that names what could be approved.
    """
    differences = changes(server, pinned, current)
    pending = {(d.list_name, d.name): d for d in differences}
    known = {(list_name, name) for list_name, entries in current.items() for name in entries}
    known |= {(list_name, name) for list_name, entries in (pinned or {}).items() for name in entries}
    wanted = {(list_name, name) for list_name, names in selected.items() for name in names}
    missing = sorted(wanted - known)
    if missing:
        choices = ", ".join(str(d).removeprefix(f"{server}: ") for d in differences) or "none"
        raise RegistryError(
            f"{server} serves no {KIND_OF[missing[0][0]]} {missing[0][1]!r} and has no pin for one "
            f"(names as the server gives them; pending changes: {choices})"
        )
    pins: ServerPins = {list_name: dict((pinned or {}).get(list_name, {})) for list_name in PINNED_LISTS}
    accepted = []
    for key in sorted(wanted & set(pending)):
        change = pending.pop(key)
        if change.new is None:
            del pins[change.list_name][change.name]
        else:
            pins[change.list_name][change.name] = change.new
        accepted.append(change)
    return pins, accepted, list(pending.values())


# --- the run-time filter ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WithheldItem:
    server: str
    kind: str
    """tool, prompt or resource template."""
    name: str
    """As a client would know it (exposed name or URI template)."""
    reason: str


class Trust:
    """Judges every catalog the gateway builds against the lock file and the poisoning checks."""

    def __init__(
        self,
        path: Path,
        *,
        mode: Mode,
        max_description: int,
        audit: AuditLog | None = None,
        reporting: bool = True,
    ) -> None:
        self.path = path
        self.mode = mode
        self.max_description = max_description
        self.audit = audit
        self.lock = read_lock(path)
        self._stamp = _stamp(path)
        self._judged: dict[tuple[str, str, str, str], tuple[Status, list[poisoning.Finding]]] = {}
        self._reported: set[tuple[Any, ...]] = set()
        self.withheld_items: list[WithheldItem] = []
        """What the catalog last filtered lost, with server, kind and reason (for listings)."""
        self.warned_items: list[WithheldItem] = []
        """Prototype mode: what the catalog last filtered serves with a warning (production would
        withhold it), with the reason, so the listings can show it."""
        self.unfiltered: Catalog | None = None
        """The catalog last filtered, as built: what a persona would see if nothing were withheld."""
        self.reporting = reporting
        """Log and audit each new problem, and watch the lock file; off for the CLI's one-shot
        listings (`mcpgw tools`), which show the problems instead."""

    @classmethod
    def for_registry(
        cls, registry: Registry, registry_path: Path | None, *, audit: AuditLog | None, reporting: bool
    ) -> Trust:
        """The policy of `registry` (its mode, its lock file next to `registry_path`)."""
        trust = cls(
            lock_path(registry, registry_path),
            mode=registry.gateway.mode,
            max_description=registry.security.max_description,
            audit=audit,
            reporting=reporting,
        )
        if reporting and trust.lock is None:
            if trust.mode == "production":
                logger.error(
                    "production mode and no lock file at %s: every tool, prompt and resource template is "
                    "withheld until `mcpgw pin`",
                    trust.path,
                )
            else:
                logger.warning(
                    "no lock file at %s: tool definitions are not pinned (run `mcpgw pin`)", trust.path
                )
        return trust

    # --- judging ---------------------------------------------------------------------------------

    def _judge(
        self, server: str, list_name: str, name: str, item: Mapping[str, Any]
    ) -> tuple[Status, list[poisoning.Finding], str]:
        sha256 = digest(definition(list_name, item))  # only the digest: this runs on every rebuild
        key = (server, list_name, name, sha256)
        judged = self._judged.get(key)
        if judged is not None:
            return (*judged, sha256)
        findings = poisoning.scan_item(
            server, KIND_OF[list_name].replace(" ", "_"), name, item, max_length=self.max_description
        )
        status: Status
        if self.lock is None:
            status = "no-lock"
        elif server not in self.lock:
            status = "unpinned"
        else:
            pinned = self.lock[server].get(list_name, {}).get(name)
            status = "new" if pinned is None else "pinned" if pinned.sha256 == sha256 else "changed"
        self._judged[key] = (status, findings)
        return status, findings, sha256

    def _verdict(
        self, server: str, list_name: str, name: str, exposed: str, item: Mapping[str, Any]
    ) -> str | None:
        """Why the item is withheld in production mode (None: pinned); reports each new problem once."""
        status, findings, sha256 = self._judge(server, list_name, name, item)
        if status == "pinned":
            return None
        production = self.mode == "production"
        what = f"{KIND_OF[list_name]} {exposed} (server {server})"
        reasons = {
            "changed": "its definition differs from its pin",
            "new": "it is not pinned (new since the server was pinned)",
            "unpinned": "its server has no pins",
            "no-lock": "there is no lock file",
        }
        reason = reasons[status]
        if findings:
            reason += "; poisoning checks flagged it: " + "; ".join(
                f"{f.field}[{f.start}:{f.end}] {f.rule}: {f.detail}" for f in findings[:5]
            )
        if status != "no-lock" or findings:
            fix = f"`mcpgw pin --diff {server}`, then `mcpgw pin --approve {server}`"
            action = "withheld" if production else "served"
            self._report(
                (server, list_name, name, status, sha256),
                f"{what} {action}: {reason} (review with {fix})",
                server=server,
                name=exposed,
                outcome=Outcome.WITHHELD if production else Outcome.WARNING,
            )
        return reason

    def _report(
        self, key: tuple[Any, ...], message: str, *, server: str, name: str, outcome: Outcome
    ) -> None:
        if key in self._reported or not self.reporting:
            return
        self._reported.add(key)
        (logger.error if outcome is Outcome.WITHHELD else logger.warning)("%s", message)
        if self.audit is not None:
            self.audit.event(Kind.SECURITY, server=server, name=name, outcome=outcome, error=message)

    def apply(self, catalog: Catalog) -> Catalog:
        """`catalog` without what the policy withholds (the same object when nothing is)."""
        withheld: dict[str, str] = {}
        items: list[WithheldItem] = []
        warned: list[WithheldItem] = []
        production = self.mode == "production"

        def kept_of(
            entries: list[dict[str, Any]], routes: Mapping[str, Any], kind: str, label: str
        ) -> list[Any]:
            kept = []
            for entry in entries:
                route = routes[entry["name"]]
                definition = {**entry, "name": route.name}
                reason = self._verdict(route.upstream.name, kind, route.name, entry["name"], definition)
                if reason is None or not production:
                    kept.append(entry)
                    if reason is not None:
                        warned.append(WithheldItem(route.upstream.name, label, entry["name"], reason))
                else:
                    withheld[entry["name"]] = reason
                    items.append(WithheldItem(route.upstream.name, label, entry["name"], reason))
            return kept

        tools = kept_of(catalog.tools, catalog.tool_routes, "tools", "tool")
        prompts = kept_of(catalog.prompts, catalog.prompt_routes, "prompts", "prompt")
        templates = []
        for template in catalog.resource_templates:
            exposed = str(template.get("uriTemplate", ""))
            upstream, original = _template_origin(catalog, exposed)
            reason = None
            if upstream is not None:
                item = {**template, "uriTemplate": original}
                reason = self._verdict(upstream.name, "resource_templates", original, exposed, item)
                if reason is not None and not production:
                    warned.append(WithheldItem(upstream.name, "resource template", exposed, reason))
                    reason = None
            if reason is None:
                templates.append(template)
            else:
                withheld[exposed] = reason
                server = upstream.name if upstream is not None else ""
                items.append(WithheldItem(server, "resource template", exposed, reason))
        for resource in catalog.resources:
            route = catalog.resource_routes[resource["uri"]]
            for finding in poisoning.scan_item(
                route.upstream.name, "resource", route.name, resource, max_length=self.max_description
            ):
                self._report(
                    ("resource", str(finding)),
                    f"resource {resource['uri']} (server {route.upstream.name}) flagged: {finding}",
                    server=route.upstream.name,
                    name=resource["uri"],
                    outcome=Outcome.WARNING,
                )
        self.withheld_items, self.unfiltered = items, catalog
        self.warned_items = warned
        if not withheld:
            return catalog
        # One set per kind: a tool and a prompt may share an exposed name.
        withheld_tools = frozenset(t["name"] for t in catalog.tools) - {t["name"] for t in tools}
        withheld_prompts = frozenset(p["name"] for p in catalog.prompts) - {p["name"] for p in prompts}
        served = {str(t.get("uriTemplate", "")) for t in templates}
        withheld_templates = tuple(
            str(t.get("uriTemplate", ""))
            for t in catalog.resource_templates
            if str(t.get("uriTemplate", "")) not in served
        )
        return replace(
            catalog,
            tools=tools,
            tool_routes={k: v for k, v in catalog.tool_routes.items() if k not in withheld_tools},
            prompts=prompts,
            prompt_routes={k: v for k, v in catalog.prompt_routes.items() if k not in withheld_prompts},
            resource_templates=templates,
            withheld=dict(withheld),
            withheld_tools=withheld_tools,
            withheld_prompts=withheld_prompts,
            withheld_templates=withheld_templates,
        )

    def withheld_from(self, gateway: Gateway, persona: str | None) -> list[WithheldItem]:
        """The withheld items `persona` (resolved as a request would be) would see if they were served."""
        return self._seen_by(gateway, persona, self.withheld_items)

    def warned_to(self, gateway: Gateway, persona: str | None) -> list[WithheldItem]:
        """The items `persona` is served with a warning (prototype mode; production would withhold them)."""
        return self._seen_by(gateway, persona, self.warned_items)

    def _seen_by(
        self, gateway: Gateway, persona: str | None, items: list[WithheldItem]
    ) -> list[WithheldItem]:
        name = gateway.resolve_persona(persona)
        if name is None or not items or self.unfiltered is None:
            return list(items)
        view = build_view(name, gateway.registry.personas[name], self.unfiltered, gateway.registry)
        visible = {entry.target for entry in view.entries.values()}
        visible.update(str(p["name"]) for p in view.prompts)
        visible.update(str(t.get("uriTemplate", "")) for t in view.resource_templates)
        return [item for item in items if item.name in visible]

    # --- the lock file changing under a running gateway ------------------------------------------

    def reload(self) -> bool:
        """Re-read the lock file if it changed; True when it did. A broken file keeps the old pins."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            lock = read_lock(self.path)
        except ConfigError as exc:
            logger.error("lock file not reloaded, the previous pins stay in force: %s", exc)
            return False
        self.lock = lock
        self._judged.clear()
        logger.info("lock file %s changed: definitions re-checked", self.path)
        return True

    async def watch(self, on_change: Callable[[], Awaitable[None]], interval: float = 0.5) -> None:
        while True:
            await anyio.sleep(interval)
            if self.reload():
                await on_change()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _template_origin(catalog: Catalog, exposed: str) -> tuple[Upstream | None, str]:
    route = catalog.template_routes.get(exposed)
    return (route.upstream, route.name) if route is not None else (None, exposed)
