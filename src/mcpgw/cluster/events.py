"""The resumable-stream event store on Redis: what a dropped SSE stream replays, kept off the process.

Owns: `RedisEventStore`, the mcp SDK's `EventStore` (as `server.resume.BoundedEventStore` is in
memory) with each event a key of its own (`<stream id>\\n<message JSON>`) and each stream a
list of its event ids, trimmed to the last `per_stream` and expiring `ttl` seconds after its
last event. Storing an event is one round trip (a pipeline); replaying reads the stream's list
and the events after the one named in `Last-Event-ID`. Redis bounds the memory (its own
`maxmemory`), not this process: a replica holds no events, so many long streams cost it nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import mcp_types
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from pydantic import TypeAdapter

from mcpgw.cluster import Cluster

_MESSAGE: TypeAdapter[Any] = TypeAdapter(mcp_types.JSONRPCMessage)


class RedisEventStore(EventStore):
    """Every session's stream events in Redis, per stream at most `per_stream`, for `ttl` seconds."""

    def __init__(self, cluster: Cluster, *, per_stream: int, ttl: float) -> None:
        self.cluster = cluster
        self.per_stream = per_stream
        self.ttl = max(1, int(ttl))

    def _event(self, event_id: str) -> str:
        return self.cluster.key("events", "event", event_id)

    def _stream(self, stream_id: str) -> str:
        return self.cluster.key("events", "stream", stream_id)

    async def store_event(self, stream_id: StreamId, message: mcp_types.JSONRPCMessage | None) -> EventId:
        event_id = uuid.uuid4().hex
        data = b"" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True).encode()
        stream = self._stream(stream_id)
        async with self.cluster.reached("a resumable stream"):
            pipe = self.cluster.redis.pipeline(transaction=False)
            pipe.set(self._event(event_id), stream_id.encode() + b"\n" + data, ex=self.ttl)
            pipe.rpush(stream, event_id)
            pipe.ltrim(stream, -self.per_stream, -1)
            pipe.expire(stream, self.ttl)
            await pipe.execute()
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        async with self.cluster.reached("resuming a stream"):
            stored: Any = await self.cluster.redis.get(self._event(last_event_id))
            if stored is None:
                return None
            stream_id: str = stored.split(b"\n", 1)[0].decode()
            listed: Any = await self.cluster.redis.lrange(self._stream(stream_id), 0, -1)  # type: ignore[misc]
            ids = [i.decode() for i in listed]
            later = ids[ids.index(last_event_id) + 1 :] if last_event_id in ids else []
            events: Any = await self.cluster.redis.mget([self._event(i) for i in later]) if later else []
        for event_id, event in zip(later, events, strict=True):
            data = None if event is None else event.split(b"\n", 1)[1]
            if data:  # priming events carry no message; an expired one is skipped
                await send_callback(EventMessage(_MESSAGE.validate_json(data), event_id))
        return stream_id
