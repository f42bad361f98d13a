"""The resources clients watch on one upstream, and asking the upstream to say when they change.

Owns: the set of watched upstream URIs, and keeping the upstream asked about
them across restarts: a handshake-era upstream with `resources/subscribe` (its
`notifications/resources/updated` arrive on the session), a 2026-07-28
upstream on one `subscriptions/listen` stream that carries every watched URI.
Which downstream clients watch what is `core.watch`'s business.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.subscriptions import ListenNotSupportedError, ResourceUpdated, SubscriptionLost, listen
from mcp.shared.exceptions import MCPError

from mcpgw.errors import UpstreamError, UpstreamUnavailable
from mcpgw.upstream.session import Session, describe

logger = logging.getLogger("mcpgw.upstream")

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
OnUpdated = Callable[[str, str], Awaitable[None]]
"""Told (upstream name, upstream URI) when a watched resource changed."""


LISTEN_WAIT = 60.0
"""Seconds a `resources/subscribe` waits at most for a 2026-07-28 upstream's listen stream to open."""


class ResourceWatches:
    """The URIs watched on one upstream."""

    def __init__(
        self,
        name: str,
        session: Session,
        *,
        request: Request,
        state: Callable[[], str],
        on_updated: OnUpdated | None = None,
    ) -> None:
        self.name = name
        self._session = session
        self._request = request
        """Sends a request once the upstream is ready (`Upstream.request`)."""
        self._state = state
        self._on_updated = on_updated
        self.watched: set[str] = set()
        self._scope: anyio.CancelScope | None = None

    async def watch(self, uri: str) -> None:
        """Ask the upstream to say when `uri` changes; its era must be known (it has started)."""
        if self._session.era != "stateless":
            await self._request("resources/subscribe", {"uri": uri})
            self.watched.add(uri)
            return
        if self._session.client is None or self._session.tasks is None:
            raise UpstreamUnavailable(self.name, f"not connected ({self._state()})")
        self.watched.add(uri)
        listening = self._restart()
        if listening is not None:
            # Answered once the upstream listens: a change the client causes right after its
            # `resources/subscribe` is answered must not reach the upstream before the stream does.
            with anyio.move_on_after(LISTEN_WAIT):  # a guard: the stream's own read timeout ends it first
                await listening.wait()

    async def unwatch(self, uri: str) -> None:
        self.watched.discard(uri)
        if self._session.era != "stateless":
            await self._request("resources/unsubscribe", {"uri": uri})
            return
        self._restart()

    async def rewatch(self) -> None:
        """After a restart: the new session is asked again for what clients still watch."""
        if self._session.era == "stateless":
            self._restart()
            return
        for uri in sorted(self.watched):
            try:
                await self._request("resources/subscribe", {"uri": uri})
            except UpstreamError as exc:
                logger.warning("upstream %s: %s is no longer watched: %s", self.name, uri, exc)

    def _restart(self) -> anyio.Event | None:
        """One listen stream carries every watched URI; a changed set means a new stream.

        Returns what is set once the new stream is acknowledged (or has failed); None: no stream."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        client, tasks = self._session.client, self._session.tasks
        if self.watched and client is not None and tasks is not None:
            self._scope = anyio.CancelScope()
            listening = anyio.Event()
            tasks.start_soon(self._stream, client, self._scope, sorted(self.watched), listening)
            return listening
        return None

    async def _stream(
        self, client: ClientSession, scope: anyio.CancelScope, uris: list[str], listening: anyio.Event
    ) -> None:
        with scope:
            try:
                async with listen(client, resource_subscriptions=uris) as subscription:
                    listening.set()
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated) and self._on_updated is not None:
                            await self._on_updated(self.name, event.uri)
            except (MCPError, SubscriptionLost, ListenNotSupportedError, TimeoutError) as exc:
                logger.warning("upstream %s: resource updates will not be seen: %s", self.name, describe(exc))
            finally:
                listening.set()
