"""What a registry reload changes: which upstreams start, stop or restart, and what waits for a restart.

Owns: `Parts` (what a registry makes of a gateway apart from its running state:
the registry itself, its data rules, its pin policy and its secrets; built by
`mcpgw.assembly`) and `plan`, which compares the running parts with new ones.
An upstream is restarted when anything it was built from changed (its entry,
the `[gateway]` limits it takes, a secret its entry names, whether mcpgw
answers its sampling or elicitation); one whose entry changed only in what is
read per call (its timeouts, aliases, namespace) is re-tuned in place; every
other upstream, and every client session, is left alone. Settings read only when the process starts (the
listening address, the HTTP server's bounds, `[audit]`, `[cluster]`) are named in
`Plan.restart_needed` instead of being half-applied. Also the two checks a new
configuration passes before the running gateway takes it (`check_personas`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from mcpgw import catalog as catalog_mod
from mcpgw.catalog import personas as personas_mod
from mcpgw.config import Registry, call_timeout, namespace_of
from mcpgw.sampling import policy

if TYPE_CHECKING:
    from mcpgw.security.dataguard import Guard
    from mcpgw.security.trust import Trust
    from mcpgw.upstream import Upstream

CALL_TIME = frozenset(
    {"timeout", "tool_timeouts", "aliases", "description", "namespace", "labels", "tool_labels"}
)
"""Entry keys read per call or per catalog build: a change re-tunes the running upstream, no restart."""

UPSTREAM_SETTINGS = (
    "startup_timeout",
    "restart_backoff_max",
    "ping_interval",
    "ping_timeout",
    "max_concurrent",
    "max_result_bytes",
)
"""`[gateway]` keys an upstream is built with (see `upstream.for_server`): a change restarts it."""

RESTART_ONLY = (
    "host",
    "port",
    "max_request_bytes",
    "max_sessions",
    "max_sessions_per_client",
    "session_idle_timeout",
    "request_header_timeout",
    "request_body_timeout",
    "allowed_hosts",
    "allowed_origins",
    "cors_origins",
)
"""`[gateway]` keys the transports read once, when they start listening."""

_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Parts:
    """What a registry makes of a gateway apart from its running state (built by `mcpgw.assembly`)."""

    registry: Registry
    guard: Guard | None = None
    trust: Trust | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What one reload does to the running gateway."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    """Removed from the registry or disabled."""
    restarted: tuple[str, ...] = ()
    """Changed: the old upstream is retired, a new one started in its place."""
    retuned: tuple[str, ...] = ()
    """Changed only in what is read per call (`CALL_TIME`, the call timeout): kept running, re-tuned."""
    restart_needed: tuple[str, ...] = ()
    """Keys that changed but take effect only when mcpgw itself restarts."""
    other: bool = False
    """Anything else changed (personas, data rules, sampling, security, timeouts)."""

    @property
    def started(self) -> tuple[str, ...]:
        return self.added + self.restarted

    @property
    def stopped(self) -> tuple[str, ...]:
        return self.removed + self.restarted

    @property
    def empty(self) -> bool:
        return not (
            self.added or self.removed or self.restarted or self.retuned or self.restart_needed or self.other
        )

    def as_dict(self) -> dict[str, Any]:
        """For the audit log's `config` row."""
        names = ("added", "removed", "restarted", "retuned", "restart_needed")
        return {name: list(getattr(self, name)) for name in names if getattr(self, name)}

    def describe(self) -> str:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("restarted", self.restarted),
                ("retuned", self.retuned),
            )
            if names
        ]
        if self.other:
            parts.append("settings changed")
        if self.restart_needed:
            parts.append(f"needs a restart to apply: {', '.join(self.restart_needed)}")
        return "; ".join(parts) or "nothing changed"


def plan(old: Parts, new: Parts) -> Plan:
    """Compare the running parts with new ones."""
    before, after = old.registry.enabled_servers(), new.registry.enabled_servers()
    changed_secrets = {
        name for name in set(old.secrets) | set(new.secrets) if old.secrets.get(name) != new.secrets.get(name)
    }
    added = tuple(name for name in after if name not in before)
    removed = tuple(name for name in before if name not in after)
    restarted = tuple(
        name
        for name in after
        if name in before
        and (
            _built_from(name, old.registry) != _built_from(name, new.registry)
            or changed_secrets.intersection(_named_secrets(name, new.registry))
        )
    )
    retuned = tuple(
        name
        for name in after
        if name in before
        and name not in restarted
        and (
            old.registry.servers[name] != new.registry.servers[name]
            or call_timeout(old.registry, before[name]) != call_timeout(new.registry, after[name])
        )
    )
    restart_needed = waiting_for_restart(old.registry, new.registry)
    other = old.registry != new.registry or bool(changed_secrets)
    return Plan(added, removed, restarted, retuned, restart_needed, other)


def views_changed(old: Parts, new: Parts) -> bool:
    """Whether every persona's view may differ though the catalog does not: their rules, the pin
    policy, or the workflow tools they may list changed."""
    fields = ("personas", "security", "workflows")
    return (
        any(getattr(old.registry, f) != getattr(new.registry, f) for f in fields)
        or old.trust is not new.trust
    )


def waiting_for_restart(started: Registry, now: Registry) -> tuple[str, ...]:
    """The keys read only at start (`RESTART_ONLY`, `[audit]`, `[cluster]`) that differ between the two."""
    keys = tuple(
        f"gateway.{key}" for key in RESTART_ONLY if getattr(started.gateway, key) != getattr(now.gateway, key)
    )
    keys += ("audit",) if started.audit != now.audit else ()
    return keys + (("cluster",) if started.cluster != now.cluster else ())


def _built_from(name: str, registry: Registry) -> tuple[Any, ...]:
    """Everything upstream `name` is built from, but the secrets' values (see `_named_secrets`) and
    what it reads per call (`CALL_TIME`)."""
    server = registry.servers[name]
    settings = registry.gateway
    return (
        # An OpenAPI server's tool names are cut to what its namespace leaves of 64 characters.
        server.model_dump_json(
            exclude=set(CALL_TIME) - ({"namespace"} if server.kind == "openapi" else set())
        ),
        tuple(getattr(settings, key) for key in UPSTREAM_SETTINGS),
        policy.declares_sampling(registry.sampling, name),
        policy.declares_elicitation(registry.sampling, name),
    )


def _named_secrets(name: str, registry: Registry) -> set[str]:
    """The variables `${NAME}` server `name`'s entry names (a secrets file value may fill any)."""
    return set(_REFERENCE.findall(registry.servers[name].model_dump_json()))


def namespaces(registry: Registry, upstreams: Mapping[str, Upstream]) -> list[tuple[str, Upstream]]:
    """The catalog's namespaces, in the registry's order."""
    return [
        (namespace_of(name, server), upstreams[name])
        for name, server in registry.enabled_servers().items()
        if name in upstreams
    ]


def check_personas(parts: Parts, namespaces: list[tuple[str, Upstream]]) -> None:
    """Every persona of `parts` resolves against the catalog it would get (`ConfigError` if not)."""
    if not parts.registry.personas:
        return
    catalog = catalog_mod.build(namespaces)
    catalog = parts.trust.apply(catalog) if parts.trust is not None else catalog
    for name, persona in parts.registry.personas.items():
        personas_mod.build_view(name, persona, catalog, parts.registry)


RETIRE_POLL = 0.05
logger = logging.getLogger("mcpgw.gateway")


async def retire(upstream: Upstream, reason: str, *, grace: float, stop_grace: float) -> None:
    """Let a removed or replaced upstream finish its calls (up to `grace`), then stop it."""
    with anyio.move_on_after(grace):
        while upstream.in_flight:
            await anyio.sleep(RETIRE_POLL)
    if upstream.in_flight:
        logger.warning(
            "upstream %s: %d call(s) still in flight after %gs; stopping it (%s)",
            upstream.name,
            upstream.in_flight,
            grace,
            reason,
        )
    upstream.stop(reason=reason)
    with anyio.move_on_after(stop_grace):
        while upstream.connected:
            await anyio.sleep(RETIRE_POLL)
