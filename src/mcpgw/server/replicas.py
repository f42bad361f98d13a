"""A serving gateway as one replica of several (`[cluster]`): what it shares with the others.

Owns: the session id prefix (`<replica>.`) and the event store (Redis) the HTTP transport is
built with, and `Replicas`, the task that keeps replicas agreeing:

- the lock file: a pin approved on one replica (`mcpgw pin --approve` against its files) is
  published with its text; every other replica writes that text to its own lock file and judges
  its catalog again at once, so the approval holds everywhere within a fraction of a second;
- the registry: an edit taken on one replica is published likewise; the others write it to their
  own registry file and reload it as they would an edit made there (refused the same way, if bad).
  The registry is meant to be one file for all: one naming another replica (`[cluster] replica`)
  is not taken (name replicas by `$MCPGW_REPLICA`);
- list changes: when a replica's catalog changes (an upstream said its lists changed), the others
  list their own upstreams again, for upstreams that tell only the session they are on.

Files are compared by content (polled every `POLL_SECONDS`): what a replica wrote for another is
not published back. Nothing is replayed to a replica that starts later: it serves its own files,
as a single gateway does. The secrets file is never shared; each replica keeps its own.
"""

from __future__ import annotations

import hashlib
import logging
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mcpgw.cluster.bus import Bus
from mcpgw.config.files import write_atomically
from mcpgw.core.gateway import Gateway
from mcpgw.upstream.lists import ListKind

if TYPE_CHECKING:
    from mcp.server.streamable_http import EventStore

    from mcpgw.server.reload import Reloader

logger = logging.getLogger("mcpgw.cluster")

POLL_SECONDS = 0.1
"""How often the lock file and the registry are compared with what was last seen or published."""
_KINDS_OF: dict[str, tuple[ListKind, ...]] = {
    "tools": ("tools",),
    "resources": ("resources", "resource_templates"),
    "prompts": ("prompts",),
}


def session_prefix(gateway: Gateway) -> str:
    """What every handshake-era session id of this replica starts with: `<replica>.`, or nothing."""
    return f"{gateway.cluster.replica}." if gateway.cluster is not None else ""


def event_store(gateway: Gateway) -> EventStore | None:
    """The resumable-stream store on the cluster's Redis; None: the process's own (`resume`)."""
    if gateway.cluster is None:
        return None
    from mcpgw.cluster.events import RedisEventStore
    from mcpgw.server.resume import MAX_EVENTS_PER_STREAM

    ttl = gateway.registry.gateway.session_idle_timeout
    return RedisEventStore(gateway.cluster, per_stream=MAX_EVENTS_PER_STREAM, ttl=ttl)


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _replica_named(text: str) -> str | None:
    """The `[cluster] replica` a registry's text sets, if any (a text that does not parse names none:
    the reload refuses it, as it would a bad edit made here)."""
    try:
        cluster = tomllib.loads(text).get("cluster")
    except tomllib.TOMLDecodeError:
        return None
    replica = cluster.get("replica") if isinstance(cluster, dict) else None
    return str(replica) if replica is not None else None


class Replicas:
    """Publishes this replica's lock file and registry edits and list changes; takes the others'."""

    def __init__(self, gateway: Gateway, *, registry_path: Path | None, reloader: Reloader | None) -> None:
        assert gateway.cluster is not None
        self.gateway = gateway
        self.bus = Bus(gateway.cluster)
        self.registry_path = registry_path
        self.reloader = reloader
        self.subscribed = anyio.Event()
        """Set once this replica hears the others."""
        self._seen = {kind: _digest(_read(self._path(kind))) for kind in ("lock", "registry")}
        """The content each file had when last published or written here."""
        self._quiet = 0
        """Above 0 while a peer's change is applied: the catalog changes it causes are not re-published."""

    def _path(self, kind: str) -> Path | None:
        if kind == "registry":
            return self.registry_path
        trust = self.gateway.trust
        return trust.path if trust is not None else None

    async def run(self) -> None:
        self.gateway.add_listener(self._catalog_changed)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: self.bus.listen(self._received, subscribed=self.subscribed))
            tg.start_soon(self._watch)

    async def _watch(self) -> None:
        while True:
            await anyio.sleep(POLL_SECONDS)
            for kind in ("lock", "registry"):
                text = _read(self._path(kind))
                digest = _digest(text)
                if digest != self._seen[kind]:
                    self._seen[kind] = digest
                    if text is not None:
                        logger.info("%s changed here; telling the other replicas", kind)
                        await self.bus.publish(kind, text=text)
                    if kind == "lock":  # here too at once, not at the gateway's next look (LOCK_POLL)
                        await self._judge_again()

    async def _received(self, message: dict[str, Any]) -> None:
        kind, sender = message.get("kind"), message.get("from")
        if kind in ("lock", "registry") and isinstance(message.get("text"), str):
            await self._take(str(kind), message["text"], str(sender))
        elif kind == "changed" and isinstance(message.get("lists"), list):
            kinds = tuple(k for name in message["lists"] for k in _KINDS_OF.get(str(name), ()))
            self._quiet += 1
            try:
                for upstream in list(self.gateway.upstreams.values()):
                    if upstream.state == "ready":
                        await upstream.relist(kinds)
            finally:
                self._quiet -= 1

    async def _take(self, kind: str, text: str, sender: str) -> None:
        path = self._path(kind)
        if path is None or _digest(text) == self._seen[kind]:
            return
        self._seen[kind] = _digest(text)
        if kind == "registry" and (named := _replica_named(text)) not in (None, self.bus.cluster.replica):
            logger.error(
                "replica %s changed the registry, which names replica %r: not taken (the registry must be"
                " the same file on every replica; name each by $MCPGW_REPLICA)",
                sender,
                named,
            )
            return
        try:
            write_atomically(path, text)
        except OSError as exc:  # e.g. a read-only mount: this replica keeps what it has
            logger.error("replica %s changed the %s; cannot write it to %s: %s", sender, kind, path, exc)
            return
        logger.info("replica %s changed the %s; written to %s and taken", sender, kind, path)
        if kind == "registry":
            if self.reloader is not None:
                self.reloader.request()
            return
        await self._judge_again()

    async def _judge_again(self) -> None:
        """The lock file changed: the catalog is judged again now (each replica does so itself, so
        the catalog changes this causes are not announced to the others)."""
        trust = self.gateway.trust
        if trust is not None and trust.reload():
            self._quiet += 1
            try:
                await self.gateway.refresh()
            finally:
                self._quiet -= 1

    async def _catalog_changed(self, changed: set[str]) -> None:
        if changed and not self._quiet:
            await self.bus.publish("changed", lists=sorted(changed))
