"""Resumable SSE streams on the HTTP transport: a bounded in-memory event store, one namespace per session.

Owns: the event store behind mcpgw's streamable HTTP endpoint (handshake era,
2025-11-25 clients). With it the mcp SDK sends a priming event (an SSE `id`)
at the start of each stream and an id with every message, so a client whose
connection drops mid-call can reconnect with `Last-Event-ID` and receive what
it missed, instead of losing the call's result. 2026-07-28 requests are
stateless (no sessions, no streams to resume) and do not touch it.

Bounded so memory cannot grow without limit: at most `MAX_EVENTS_PER_STREAM`
events per stream, `MAX_EVENTS` events and `MAX_BYTES` of messages in all;
past a limit the oldest events go first (a client resuming from an evicted
event gets an empty stream, as from an unknown one, and retries its request).

Why not fastmcp's `EventStore`: it bounds entries by count only (one large
tool result each could still add up to gigabytes) and round-trips every
event through two pydantic adapters and a key-value store on the call path;
this one keeps each message's JSON once and counts its bytes. The SDK's
session manager hands one store to every session, and the SDK's stream ids
are request ids, so sessions would read each other's streams: each session
gets fastmcp's `SessionScopedEventStore` over the shared one instead.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import mcp_types
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.routing import Route

from mcpgw import _compat
from mcpgw.server.sessions import SessionLimits

logger = logging.getLogger("mcpgw.resume")

MAX_EVENTS_PER_STREAM = 100
"""Events kept per stream (one call's progress, logs and result, or a session's GET stream)."""
MAX_EVENTS = 10_000
MAX_BYTES = 32 * 1024 * 1024
"""Events and bytes of message JSON kept across every session of the gateway."""

RETRY_MS = 1000
"""The SSE `retry` field of priming events: how long a dropped client waits before reconnecting."""

_MESSAGE: TypeAdapter[Any] = TypeAdapter(mcp_types.JSONRPCMessage)


@dataclass(frozen=True, slots=True)
class _Event:
    stream: StreamId
    data: bytes | None
    """The message as JSON; None for a priming event."""


class BoundedEventStore(EventStore):
    """The SDK's `EventStore` in memory, oldest events evicted past per-stream and total limits."""

    def __init__(
        self,
        *,
        per_stream: int = MAX_EVENTS_PER_STREAM,
        max_events: int = MAX_EVENTS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.per_stream, self.max_events, self.max_bytes = per_stream, max_events, max_bytes
        self._events: OrderedDict[EventId, _Event] = OrderedDict()
        """Every kept event, oldest first."""
        self._streams: dict[StreamId, deque[EventId]] = {}
        self.bytes = 0

    @property
    def events(self) -> int:
        """Events kept now. (Not `__len__`: the SDK tests the store for truth, and empty must be on.)"""
        return len(self._events)

    async def store_event(self, stream_id: StreamId, message: mcp_types.JSONRPCMessage | None) -> EventId:
        event_id = uuid.uuid4().hex
        data = (
            None if message is None else message.model_dump_json(by_alias=True, exclude_unset=True).encode()
        )
        size = len(data or b"")
        if size > self.max_bytes:  # cannot be kept: a resume from before it finds nothing, never half
            logger.warning(
                "event of %d bytes exceeds the resumable-stream store (%d bytes)", size, self.max_bytes
            )
            self._drop_stream(stream_id)
            return event_id
        self._events[event_id] = _Event(stream_id, data)
        self._streams.setdefault(stream_id, deque()).append(event_id)
        self.bytes += size
        ids = self._streams[stream_id]
        while len(ids) > self.per_stream:
            self._forget(ids.popleft())
        while len(self._events) > self.max_events or self.bytes > self.max_bytes:
            oldest = next(iter(self._events))
            self._streams[self._events[oldest].stream].popleft()  # a stream's oldest is its first
            self._forget(oldest)
        return event_id

    def _forget(self, event_id: EventId) -> None:
        event = self._events.pop(event_id)
        self.bytes -= len(event.data or b"")
        if not self._streams.get(event.stream):
            self._streams.pop(event.stream, None)

    def _drop_stream(self, stream_id: StreamId) -> None:
        for event_id in self._streams.pop(stream_id, ()):
            event = self._events.pop(event_id)
            self.bytes -= len(event.data or b"")

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        event = self._events.get(last_event_id)
        if event is None:
            return None
        ids = list(self._streams.get(event.stream, ()))
        for event_id in ids[ids.index(last_event_id) + 1 :] if last_event_id in ids else []:
            later = self._events.get(event_id)
            if later is not None and later.data is not None:
                await send_callback(EventMessage(_MESSAGE.validate_json(later.data), event_id))
        return event.stream


class _SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, giving each new session its own view of the shared store, and an
    id that starts with `session_prefix` (`<replica>.`, so a load balancer can route it home)."""

    session_prefix = ""

    def _admit_session(self, requestor: Any) -> Any:
        return _compat.admit_session(self, requestor, prefix=self.session_prefix)

    @property
    def event_store(self) -> EventStore | None:
        # Read once per new transport (session) by the SDK: a fresh prefix per session.
        from fastmcp.server.session_scoped_event_store import SessionScopedEventStore

        shared = self._shared_store
        return None if shared is None else SessionScopedEventStore(shared, session_id=uuid.uuid4().hex)

    @event_store.setter
    def event_store(self, store: EventStore | None) -> None:
        self._shared_store = store


def streamable_http_app(
    server: Any,
    *,
    path: str,
    security: Any,
    max_body: int,
    max_sessions: int,
    per_client: int,
    idle_timeout: float,
    store: EventStore | None = None,
    session_prefix: str = "",
) -> Starlette:
    """What `Server.streamable_http_app(streamable_http_path=path, transport_security=security)` builds,
    with a resumable-stream store shared by every session, each in its own namespace, and the
    sessions bounded per client and in all (`sessions.SessionLimits`); every session id starts with
    `session_prefix`."""
    manager = _SessionManager(
        app=server,
        event_store=store or BoundedEventStore(),
        security_settings=security,
        retry_interval=RETRY_MS,
        max_request_body_size=max_body,
        session_idle_timeout=idle_timeout,
        # Only a backstop: `SessionLimits` admits sessions, and a session it closes to make room
        # may be counted here until its server task has wound down.
        max_sessions=2 * max_sessions,
    )
    manager.session_prefix = session_prefix
    _compat.set_session_manager(server, manager)  # as the SDK's own builder does
    endpoint = SessionLimits(
        StreamableHTTPASGIApp(manager), manager, max_sessions=max_sessions, per_client=per_client
    )
    return Starlette(routes=[Route(path, endpoint=endpoint)], lifespan=lambda app: manager.run())
