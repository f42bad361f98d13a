"""Messages between replicas over Redis pub/sub: one channel, JSON messages, each naming its sender.

Owns: `Bus`, which publishes a message to every other replica and hands each one received (not
its own) to a handler, resubscribing after Redis goes away. What the messages mean (a lock file
or registry changed on one replica, an upstream's lists changed) is `server.replicas`'s.
Pub/sub delivers to whoever listens now and keeps nothing: a replica that was away misses what
was said meanwhile and reads its own files when it starts, as a single gateway does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from mcpgw.cluster import Cluster

logger = logging.getLogger("mcpgw.cluster")

RETRY_SECONDS = 1.0
Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Bus:
    """The replicas' channel: `publish` to the others, `listen` to them."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.channel = cluster.key("bus")

    async def publish(self, kind: str, **payload: Any) -> None:
        """Tell every other replica; a Redis that does not answer is logged, not raised (best effort)."""
        message = json.dumps({"kind": kind, "from": self.cluster.replica, **payload})
        try:
            async with self.cluster.reached("telling the other replicas"):
                await self.cluster.redis.publish(self.channel, message)
        except Exception as exc:
            logger.warning("could not tell the other replicas of a %s change: %s", kind, exc)

    async def listen(self, handler: Handler, *, subscribed: anyio.Event | None = None) -> None:
        """Hand every other replica's message to `handler` until cancelled; `subscribed` is set once
        the subscription is in place (and again after each resubscription)."""
        from redis.exceptions import RedisError

        while True:
            try:
                async with self.cluster.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    if subscribed is not None:
                        subscribed.set()
                    async for raw in pubsub.listen():
                        await self._deliver(handler, raw)
            except (RedisError, OSError) as exc:
                logger.warning("lost the replicas' channel (%s); resubscribing in %gs", exc, RETRY_SECONDS)
                await anyio.sleep(RETRY_SECONDS)

    async def _deliver(self, handler: Handler, raw: dict[str, Any]) -> None:
        if raw.get("type") != "message":
            return
        try:
            message = json.loads(raw["data"])
        except (ValueError, TypeError):
            logger.warning("ignored a message on %s that is not JSON", self.channel)
            return
        if not isinstance(message, dict) or message.get("from") == self.cluster.replica:
            return
        try:
            await handler(message)
        except Exception:  # one bad message must not end the subscription
            logger.exception(
                "handling a %s message from replica %s failed", message.get("kind"), message.get("from")
            )
