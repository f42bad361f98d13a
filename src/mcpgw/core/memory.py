"""The catalog remembered from the last run: what lets a restarted gateway answer lists at once.

Owns: the file next to the registry (`servers.toml` -> `servers.catalog.json`) that keeps, per
server, the lists it last served and a fingerprint of its registry entry; reading it at start; the
lists that stand for a server while its first start in this run is under way (`standing`); what a
client that listed from memory must be told once every upstream has settled (`settled`); and
writing the file again from what the upstreams served.

What is remembered is only ever the upstreams' own lists: the catalog is built from them by
`catalog.build` and judged by the pin policy (`Trust.apply`), and the personas' views and data rules
read that catalog, exactly as for lists an upstream has just given. An entry whose server left the
registry, is disabled, or whose entry changed (command, URL, anything) is dropped at load, never
served. A server that has not served yet in this run stands on its memory only while that first
start is under way: once it fails, its names go, as they would without the memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcpgw.catalog import Catalog
from mcpgw.catalog import Lists as CatalogLists
from mcpgw.config import Registry, ServerConfig
from mcpgw.upstream import Upstream
from mcpgw.upstream.lists import ALL_LISTS, LIST_OF

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway

logger = logging.getLogger("mcpgw.memory")

FORMAT = 1
"""The file's format; a file of another format is ignored (and rewritten)."""


def memory_path(registry_path: Path) -> Path:
    """Where the catalog of the registry at `registry_path` is remembered."""
    return registry_path.with_suffix(".catalog.json")


def fingerprint(server: ServerConfig) -> str:
    """Everything the registry says about a server, hashed: a changed entry is another server."""
    dumped = json.dumps(server.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(dumped.encode()).hexdigest()


class CatalogMemory:
    """The remembered lists of the registry's enabled servers (only entries that still match it)."""

    def __init__(self, path: Path, entries: Mapping[str, CatalogLists]) -> None:
        self.path = path
        self._entries = dict(entries)
        self.complete = False
        """Every enabled server is remembered: lists may be answered before any upstream has started."""

    def __bool__(self) -> bool:
        return self.complete

    @classmethod
    def load(cls, path: Path, registry: Registry) -> CatalogMemory:
        """What `path` remembers of `registry`'s enabled servers. A file that is missing, unreadable,
        of another format or damaged remembers nothing (logged): it is a cache, rewritten after start."""
        servers = registry.enabled_servers()
        entries: dict[str, CatalogLists] = {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = None
        except (OSError, ValueError) as exc:
            logger.warning("catalog memory %s ignored (%s); upstreams are listed as they start", path, exc)
            data = None
        remembered = data.get("servers") if isinstance(data, dict) and data.get("format") == FORMAT else None
        if data is not None and not isinstance(remembered, dict):
            logger.warning("catalog memory %s ignored: not a format %d file", path, FORMAT)
        for name, entry in (remembered or {}).items():
            server, lists = servers.get(name), _entry(entry)
            if server is not None and lists is None:
                logger.warning("catalog memory %s: the entry of %r is damaged; not used", path, name)
            elif server is not None and lists is not None and entry.get("fingerprint") == fingerprint(server):
                entries[name] = lists
        memory = cls(path, entries)
        memory.complete = bool(servers) and set(servers) <= set(entries)
        return memory

    def standing(self, upstream: Upstream) -> CatalogLists | None:
        """The remembered lists of `upstream` while its first start is under way, else None."""
        if not self.complete or upstream.state != "starting" or upstream.served:
            return None
        return self._entries.get(upstream.name)

    async def settled(self, before: Catalog, after: Catalog, upstreams: Mapping[str, Upstream]) -> set[str]:
        """Every upstream has settled: the file is written again, and the lists that changed from the
        remembered catalog (`before`) to the live one (`after`) are returned, to be announced."""
        changed: set[str] = set()
        if self.complete:
            changed = {LIST_OF[kind] for kind in ALL_LISTS if getattr(before, kind) != getattr(after, kind)}
        self.complete = False  # from now on the upstreams' own lists stand for them
        self.save(upstreams)
        return changed

    def save(self, upstreams: Mapping[str, Upstream]) -> None:
        """Remember what each upstream serves (one that has not served keeps its remembered entry, or
        none); servers no longer in the registry are forgotten. Written whole, or not at all."""
        servers: dict[str, Any] = {}
        for name, upstream in upstreams.items():
            lists = (upstream.lists, upstream.invalid_tools) if upstream.served else self._entries.get(name)
            if lists is None:
                continue
            self._entries[name] = lists
            servers[name] = {
                "fingerprint": fingerprint(upstream.config),
                **{kind: list(lists[0].get(kind, [])) for kind in ALL_LISTS},
                "invalid_tools": dict(lists[1]),
            }
        text = json.dumps({"format": FORMAT, "servers": servers}, ensure_ascii=False)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            # Owner-only: it holds what the upstreams describe, which may say more than the registry.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("cannot remember the catalog in %s: %s", self.path, exc.strerror or exc)
            temporary.unlink(missing_ok=True)


def _entry(entry: Any) -> CatalogLists | None:
    """One server's remembered lists, or None when the entry is not shaped as `save` writes it."""
    if not isinstance(entry, dict):
        return None
    lists: dict[Any, list[dict[str, Any]]] = {}
    for kind in ALL_LISTS:
        items = entry.get(kind)
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            return None
        lists[kind] = items
    invalid = entry.get("invalid_tools")
    if not isinstance(invalid, dict) or not all(isinstance(v, str) for v in invalid.values()):
        return None
    return lists, invalid


async def wait_listable(gateway: Gateway) -> None:
    """Wait until lists may be answered: at once from a complete remembered catalog, else until every
    upstream has settled (`Gateway.wait_started`)."""
    if not gateway.memory:
        await gateway.wait_started()
