"""Shared state for several mcpgw replicas behind one load balancer, kept in Redis (`[cluster]`).

Owns: `Cluster`, the one Redis client of a replica and its name, and the boundary where redis-py's
errors become `SharedStateUnavailable`. redis-py is imported on first use only, so a gateway
without `[cluster]` never pays for it (it is the `cluster` extra). Its modules:

    limits   `[limits]` rate limits: requests per minute and calls in flight, in process or on Redis
    budgets  sampling budgets reserved and settled atomically across replicas (Lua scripts)
    events   the resumable-stream event store (what a dropped SSE stream replays) on Redis
    bus      pub/sub between replicas: lock file and registry broadcasts, list changes

Why Redis and not a cluster of our own: every piece of state here is a counter, a small set with
expiries or a message to everyone, which Redis does atomically (a Lua script runs alone) and
which every operator already knows how to run and watch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mcpgw.config import ClusterSettings
from mcpgw.errors import SharedStateUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

DAY_SECONDS = 86_400


class Cluster:
    """One replica's view of the cluster: its name, its Redis client, and the keys it uses."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.replica = settings.replica_name()
        """This replica's name: the prefix of the session ids it hands out (`<replica>.<hex>`)."""
        self._client: Redis | None = None

    @property
    def redis(self) -> Redis:
        """The client, made on first use (redis-py binds its connections to the running loop then)."""
        if self._client is None:
            import redis.asyncio as aioredis  # about 60 ms of imports, only with [cluster]

            self._client = aioredis.Redis.from_url(
                self.settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
            )
        return self._client

    def key(self, *parts: str) -> str:
        return self.settings.key_prefix + ":".join(parts)

    @property
    def where(self) -> str:
        """The Redis server, for messages: its address without any password."""
        url = urlsplit(self.settings.redis_url)
        return url.path if url.scheme == "unix" else f"{url.hostname}:{url.port or 6379}"

    @asynccontextmanager
    async def reached(self, what: str) -> AsyncIterator[None]:
        """The one boundary of redis-py's errors: they leave as `SharedStateUnavailable`, naming `what`."""
        from redis.exceptions import RedisError

        try:
            yield
        except RedisError as exc:
            raise SharedStateUnavailable(
                f"{what} needs the cluster's shared state, and Redis at {self.where} did not answer: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def number(value: Any) -> float:
    """A number a Lua script returned as a string (Lua's numbers come back truncated to integers)."""
    return float(value.decode() if isinstance(value, bytes) else value)
