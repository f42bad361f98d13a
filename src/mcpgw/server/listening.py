"""2026-07-28 `subscriptions/listen` streams that name resources: bridged to the upstreams that own them.

Owns: serving a downstream listen request whose filter has
`resourceSubscriptions`. Each URI is checked against the stream's persona like
a `resources/subscribe` (one the persona cannot read, or the security policy
withholds, is not honored: it is left out of the acknowledgement, as the
revision has it for what a server will not deliver), subscribed upstream
through `resourcewatch` (`resources/subscribe` to a handshake-era upstream, its
own listen stream on a 2026-07-28 one), and its "updated" news goes to this
stream alone, under the URI the client named. When the stream ends, however it
ends, its upstream subscriptions are dropped.

Listen requests without resource subscriptions go straight to the shared
list-change handler (`notify.Announcer`). Each stream with subscriptions gets
its own event bus (`StreamBus`) in front of the shared one, so an update is
delivered once per stream that asked, never fanned out to other personas'
streams that happen to name the same URI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ListenHandler, ResourceUpdated, ServerEvent, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, SubscriptionsListenRequestParams, SubscriptionsListenResult

from mcpgw import audit
from mcpgw.errors import GatewayError

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway

logger = logging.getLogger("mcpgw.listening")

Ctx = ServerRequestContext[Any, Any]
Listener = Callable[[ServerEvent], None]
UNWATCH_TIMEOUT = 5.0
"""Seconds a closing stream waits for its upstream unsubscriptions (a hung upstream must not hold it)."""
MAX_STREAMS = 1024
"""Open listen streams with resource subscriptions, per server: each gets its own SDK `ListenHandler`,
so the SDK's own cap (1024 streams per handler) does not bound them; this does."""
MAX_URIS = 1024
"""Resources one stream may subscribe: URIs beyond it are not honored (left out of the acknowledgement)."""


class StreamBus:
    """One listen stream's events: the shared list changes, plus the resource updates it subscribed to.

    It is also the stream's `resourcewatch.Subscriber`: the watch tells it of updates by URI.
    """

    def __init__(self, shared: SubscriptionBus) -> None:
        self._shared = shared
        self._listeners: dict[object, Listener] = {}

    async def publish(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            listener(event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener
        off_shared = self._shared.subscribe(listener)

        def unsubscribe() -> None:
            self._listeners.pop(token, None)
            off_shared()

        return unsubscribe

    async def send_resource_updated(self, uri: str) -> None:
        await self.publish(ResourceUpdated(uri=uri))


class ListenBridge:
    """The `subscriptions/listen` handler of one downstream server (stdio or HTTP)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        plain: ListenHandler,
        shared: SubscriptionBus,
        persona_of: Callable[[Ctx], str | None],
    ) -> None:
        self._gateway = gateway
        self._plain = plain
        """Serves the streams that name no resources (list changes only)."""
        self._shared = shared
        self._persona_of = persona_of
        self._open = 0

    async def __call__(self, ctx: Ctx, params: SubscriptionsListenRequestParams) -> SubscriptionsListenResult:
        wanted = list(dict.fromkeys(params.notifications.resource_subscriptions or ()))
        if not wanted:
            return await self._plain(ctx, params)
        if self._open >= MAX_STREAMS:
            raise MCPError(INTERNAL_ERROR, f"Subscription limit reached ({MAX_STREAMS} listen streams)")
        if len(wanted) > MAX_URIS:
            logger.warning("listen stream: %d resources named, the first %d honored", len(wanted), MAX_URIS)
            wanted = wanted[:MAX_URIS]
        stream = StreamBus(self._shared)
        persona = self._persona_of(ctx)
        self._open += 1
        try:
            honored = [uri for uri in wanted if await self._watch(ctx, uri, persona, stream)]
            notifications = params.notifications.model_copy(
                update={"resource_subscriptions": honored or None}
            )
            return await ListenHandler(stream)(
                ctx, params.model_copy(update={"notifications": notifications})
            )
        finally:
            self._open -= 1
            # The client went away (cancellation) or the stream closed: its upstream subscriptions go too.
            with anyio.CancelScope(shield=True), anyio.move_on_after(UNWATCH_TIMEOUT):
                await self._gateway.watch.forget(stream)

    async def _watch(self, ctx: Ctx, uri: str, persona: str | None, stream: StreamBus) -> bool:
        """Subscribe `uri` for this stream, as one audited `subscribe` step; False when it is not honored."""
        from mcpgw.server import (
            handlers as server,  # its request-describing helpers; imported here, as it imports us
        )

        gateway = self._gateway
        step = server._step(gateway, ctx, audit.Kind.SUBSCRIBE, persona)
        step.name = uri
        try:
            with audit.recording(step, into=gateway.audit):
                await gateway.subscribe({"uri": uri}, persona=persona, connection=stream)
        except GatewayError as exc:
            logger.info("listen stream: %s not subscribed: %s", uri, exc)
            return False
        return True
