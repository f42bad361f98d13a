"""Reviewing what upstreams serve before it is trusted: the check of a new server, and `pin`'s policy.

Owns: starting servers once to read their lists (never restarted, stopped as
soon as they are read); the check `mcpgw add-server` runs before it writes a
server (does it start, what do the poisoning checks flag); and what `mcpgw pin`
does to each server's entry in the lock file:

    action         server not pinned yet                  server pinned
    pin            pinned, flagged items left out         nothing; differences are reported
    diff           nothing (reported as not pinned)       nothing; differences are shown
    approve        pinned as served, flagged items too    every difference accepted
    --tool etc.    only the selected items, accepted (approve) or shown (diff)

The lock file's format and the comparison are `pins`'; the filter a running
gateway applies is `trust`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from mcpgw import config as config_mod
from mcpgw.config import Registry, ServerConfig
from mcpgw.errors import NeedsLogin, RegistryError, UpstreamUnavailable
from mcpgw.security import pins, poisoning
from mcpgw.security.pins import Change, ServerPins
from mcpgw.upstream import Upstream, credentials, for_server

Lists = dict[str, list[dict[str, Any]]]
"""One upstream's lists, as `Upstream.lists` holds them: list name -> items."""

Action = Literal["pin", "diff", "approve"]

LIST_OF_KIND = {"tool": "tools", "prompt": "prompts", "resource_template": "resource_templates"}
"""A finding's kind -> the pinned list its item belongs to (plain resources are not pinned)."""


@dataclass(frozen=True)
class _Look:
    """What one server served when it was started for a look."""

    name: str
    state: str
    error: str | None
    lists: Lists


Follow = Callable[[dict[str, Upstream]], Awaitable[None]]
"""Told of the upstreams as they start (the CLI's progress lines); returns once each has settled."""


async def _look(
    registry: Registry, servers: Mapping[str, ServerConfig], *, follow: Follow | None = None
) -> list[_Look]:
    """Start `servers` together, wait until each is ready or failed, take their lists, stop them."""
    secrets = credentials.load_secrets(registry.gateway)
    upstreams = [
        for_server(name, server, registry, secrets=secrets, restart=False) for name, server in servers.items()
    ]
    async with anyio.create_task_group() as tg:
        for upstream in upstreams:
            tg.start_soon(upstream.run)
        if follow is not None:
            await follow({u.name: u for u in upstreams})
        for upstream in upstreams:
            await upstream.wait_settled()
        looks = [_Look(u.name, u.state, u.error, {k: list(v) for k, v in u.lists.items()}) for u in upstreams]
        for upstream in upstreams:
            upstream.stop()
    return looks


# --- add-server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerCheck:
    """A new server, started once before it is added."""

    tools: int
    findings: list[poisoning.Finding]
    error: RegistryError | None
    """Set when it did not start: the caller stops with it (after showing the findings)."""
    needs_login: bool = False
    """It did not start because it wants an OAuth login (`mcpgw login`) mcpgw does not have yet."""


async def check_server(
    registry_path: Path, name: str, server: ServerConfig, *, follow: Follow | None = None
) -> ServerCheck:
    """Start `server` as the registry at `registry_path` would (its limits and secrets file; the
    defaults when the file does not exist yet), count its tools and run the poisoning checks."""
    registry = config_mod.load(registry_path)[0] if registry_path.exists() else Registry()
    (look,) = await _look(registry, {name: server}, follow=follow)
    error = None
    if look.state != "ready":
        error = RegistryError(
            f"server {name!r} did not start (use --no-check to add it anyway): {look.error}"
        )
    findings = poisoning.scan_lists(name, look.lists, max_length=poisoning.DEFAULT_MAX_DESCRIPTION)
    needs_login = error is not None and NeedsLogin.marker in (look.error or "")
    return ServerCheck(
        tools=len(look.lists["tools"]), findings=findings, error=error, needs_login=needs_login
    )


# --- pin ----------------------------------------------------------------------------------------


def servers_to_pin(registry: Registry, server: str | None) -> list[str]:
    """`server` (which must exist and be enabled), else every enabled server."""
    if server is None:
        return list(registry.enabled_servers())
    if server not in registry.servers:
        raise RegistryError(f"no server named {server!r} (known: {', '.join(registry.servers) or 'none'})")
    if not registry.servers[server].enabled:
        raise RegistryError(f"server {server!r} is disabled; enable it to pin it")
    return [server]


async def collect_lists(
    registry: Registry, names: list[str], *, follow: Follow | None = None
) -> dict[str, Lists]:
    """Start the named servers, take their lists, stop them; a server that does not start is an error."""
    looks = await _look(registry, {name: registry.servers[name] for name in names}, follow=follow)
    failed = [look for look in looks if look.state != "ready"]
    if failed:
        raise UpstreamUnavailable(
            failed[0].name, f"did not start ({failed[0].error}); the lock file is unchanged"
        )
    return {look.name: look.lists for look in looks}


@dataclass(frozen=True)
class ServerReview:
    """What `mcpgw pin` found for one server, and what its entry in the lock file becomes."""

    server: str
    action: Action
    selective: bool
    """Only the items named with --tool, --prompt and --template were considered."""
    was_pinned: bool
    current: ServerPins
    """The pins of what the server serves now."""
    changes: list[Change]
    """Its differences from its pins; when selective, the selected ones (accepted, or to show)."""
    pins: ServerPins | None
    """What the lock file is to hold for the server now; None leaves its entry as it is."""
    pending: list[Change] = field(default_factory=list)
    """When selective: the differences not selected, still pending."""
    up_to_date: list[tuple[str, str]] = field(default_factory=list)
    """When selective: (list name, item) selected that already match their pins."""
    flagged: list[tuple[str, str]] = field(default_factory=list)
    """A first pin: (list name, item) left out because the poisoning checks flagged them."""


def review(
    server: str,
    pinned: ServerPins | None,
    lists: Lists,
    *,
    findings: Sequence[poisoning.Finding],
    action: Action,
    selected: Mapping[str, Collection[str]] | None = None,
) -> ServerReview:
    """Apply `action` to one server's pins (`pinned`, None when it has none) given what it serves.

    `findings`: the poisoning checks' findings on `lists` (a first pin leaves those items out).
    `selected`: list name -> item names, to approve or show only those; an item neither served nor
    pinned is a `RegistryError`.
    """
    current = pins.snapshot(lists)
    was_pinned = pinned is not None
    if selected and any(selected.values()):
        approved, accepted, pending = pins.approve(server, pinned, current, selected)
        chosen = {(list_name, name) for list_name, names in selected.items() for name in names}
        return ServerReview(
            server=server,
            action=action,
            selective=True,
            was_pinned=was_pinned,
            current=current,
            changes=accepted,
            pins=approved if action == "approve" and accepted else None,
            pending=pending,
            up_to_date=sorted(chosen - {(d.list_name, d.name) for d in accepted}),
        )
    differences = pins.changes(server, pinned, current)
    updated: ServerPins | None = None  # `diff`, and `pin` of a pinned server, change nothing
    flagged: list[tuple[str, str]] = []
    if action == "approve" and (differences or not was_pinned):
        updated = current
    elif action == "pin" and not was_pinned:
        # A first pin: a flagged item is pinned only by `--approve`, after a person has read `--diff`.
        flagged = sorted({(LIST_OF_KIND[f.kind], f.name) for f in findings if f.kind in LIST_OF_KIND})
        updated = {
            list_name: {item: p for item, p in entries.items() if (list_name, item) not in flagged}
            for list_name, entries in current.items()
        }
    return ServerReview(
        server=server,
        action=action,
        selective=False,
        was_pinned=was_pinned,
        current=current,
        changes=differences,
        pins=updated,
        flagged=flagged,
    )
