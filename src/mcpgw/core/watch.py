"""Resource subscriptions through the gateway: `resources/subscribe` and `resources/unsubscribe`.

Owns: which downstream connections watch which exposed resource URI, one
upstream subscription per watched URI however many clients watch it (taken
with the first subscriber, dropped with the last), and relaying the upstream's
"updated" news to exactly the connections that subscribed, under the URI they
know (`mcpgw://<namespace>/...` or unprefixed).

A handshake-era upstream is asked with `resources/subscribe`; a 2026-07-28
upstream, which has no such method, on its `subscriptions/listen` stream (see
`Upstream.watch`). Handshake-era clients subscribe with `resources/subscribe`;
2026-07-28 clients name the URIs on their own listen stream (`listening`), whose
subscriptions are all dropped when the stream ends (`forget`).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from mcpgw import catalog as catalog_mod
from mcpgw.errors import GatewayError

if TYPE_CHECKING:
    from mcpgw.upstream import Upstream

logger = logging.getLogger("mcpgw.resourcewatch")


class Subscriber(Protocol):
    """A downstream connection (the SDK's `Connection`)."""

    async def send_resource_updated(self, uri: str) -> None: ...


class ResourceWatch:
    def __init__(self) -> None:
        self._watchers: dict[tuple[str, str], weakref.WeakSet[Any]] = {}
        """(upstream name, upstream URI) -> connections; the exposed URI is derived when relaying."""
        self._exposed: dict[tuple[str, str], str] = {}
        self._upstreams: dict[tuple[str, str], Upstream] = {}

    async def subscribe(
        self, upstream: Upstream, upstream_uri: str, exposed_uri: str, connection: Subscriber
    ) -> None:
        key = (upstream.name, upstream_uri)
        watchers = self._watchers.get(key)
        if not watchers:
            await upstream.watch(upstream_uri)
            watchers = self._watchers[key] = weakref.WeakSet()
        watchers.add(connection)
        self._exposed[key] = exposed_uri
        self._upstreams[key] = upstream

    async def unsubscribe(self, upstream: Upstream, upstream_uri: str, connection: Subscriber) -> None:
        key = (upstream.name, upstream_uri)
        watchers = self._watchers.get(key)
        if watchers is None:
            return
        watchers.discard(connection)
        if not watchers:
            del self._watchers[key]
            self._upstreams.pop(key, None)
            self._exposed.pop(key, None)
            await upstream.unwatch(upstream_uri)

    async def forget(self, connection: Subscriber) -> None:
        """Drop every subscription of `connection` (a listen stream that ended), by the upstream it went to.

        By what was subscribed, not by the current catalog: a URI that has left the catalog
        since is still unwatched upstream.
        """
        for key, watchers in list(self._watchers.items()):
            upstream = self._upstreams.get(key)
            if connection in watchers and upstream is not None:
                try:
                    await self.unsubscribe(upstream, key[1], connection)
                except GatewayError as exc:  # a dead upstream has no subscription left to drop
                    logger.debug("unwatching %s on %s failed: %s", key[1], key[0], exc)

    async def moved(self, upstream: Upstream) -> None:
        """`upstream` replaces one of the same name (a registry reload changed it): what was watched
        on the old one is watched on it, and its news reach the same connections."""
        for key in [key for key in self._watchers if key[0] == upstream.name]:
            self._upstreams[key] = upstream
            try:
                await upstream.watch(key[1])
            except GatewayError as exc:
                logger.warning("watching %s again on %s failed: %s", key[1], upstream.name, exc)

    def dropped(self, upstream: str) -> None:
        """`upstream` left the registry: nothing of it is watched any more."""
        for key in [key for key in self._watchers if key[0] == upstream]:
            del self._watchers[key]
            self._exposed.pop(key, None)
            self._upstreams.pop(key, None)

    async def updated(self, upstream: str, upstream_uri: str, namespace: str | None) -> None:
        """The upstream says `upstream_uri` changed: tell the connections watching it."""
        key = (upstream, upstream_uri)
        exposed = self._exposed.get(key)
        if exposed is None:
            exposed = catalog_mod.expose_uri(namespace, upstream_uri) if namespace else upstream_uri
        for connection in list(self._watchers.get(key) or ()):
            try:
                await connection.send_resource_updated(exposed)
            except Exception as exc:  # a gone client must not stop the others' news
                logger.debug("resource update for %s not delivered: %s", exposed, exc)
