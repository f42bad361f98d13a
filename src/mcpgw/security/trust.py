"""The run-time filter: what a gateway serves, warns about or withholds, judged against the pins.

Owns: `Trust`, which the gateway applies to every catalog it builds, comparing
each tool, prompt and resource template with its pin in the lock file (see
`pins`) and running the poisoning checks on it; reporting each new problem once
(log and audit); and reloading the lock file when it changes.

Policy, by `[gateway] mode`:

    status of an item             prototype                     production
    pinned, digest matches        served                        served
    changed since its pin         served, warning logged+audit  withheld until `pin --approve`
    new (server pinned, item not) served, warning logged+audit  withheld until `pin --approve`
    server not in the lock        served, warning logged+audit  withheld until `pin`
    no lock file at all           served, one info line         everything withheld until `pin`
    poisoning findings            warning logged+audit          withheld unless its pin matches

A matching pin is the approval: `pin` never pins a flagged item on its own;
`pin --approve` does, after a person has read `pin --diff`. The running gateway
watches the lock file, so an approval takes effect (and is announced with
list_changed) without a restart. Plain resources are scanned and reported but
not pinned: their lists are often data (files, rows), not definitions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mcpgw.audit import Kind, Outcome
from mcpgw.catalog import Catalog
from mcpgw.catalog.personas import build_view
from mcpgw.config import Mode, Registry
from mcpgw.errors import ConfigError
from mcpgw.security import poisoning
from mcpgw.security.pins import KIND_OF, definition, digest, lock_path, read_lock

if TYPE_CHECKING:
    from mcpgw.audit import AuditLog
    from mcpgw.core.gateway import Gateway
    from mcpgw.upstream import Upstream

logger = logging.getLogger("mcpgw.pins")  # the name operators' log filters already know

Status = Literal["pinned", "changed", "new", "unpinned", "no-lock"]


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
                # Info, not a warning: prototype mode serves unpinned definitions by design, and says so
                # at start; `--log-level warning` asks for the problems only.
                logger.info(
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
                # What the upstream serves, not the catalog's rewriting of it: a pin is of that.
                definition = route.definition or {**entry, "name": route.name}
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
                origin = catalog.template_routes[exposed].definition
                item = origin or {**template, "uriTemplate": original}
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
                route.upstream.name,
                "resource",
                route.name,
                route.definition or resource,
                max_length=self.max_description,
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


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _template_origin(catalog: Catalog, exposed: str) -> tuple[Upstream | None, str]:
    route = catalog.template_routes.get(exposed)
    return (route.upstream, route.name) if route is not None else (None, exposed)
