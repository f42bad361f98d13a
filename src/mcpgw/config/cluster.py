"""The scale-out tables of the registry: `[cluster]` (shared state on Redis) and `[limits]` (rate limits).

Owns: `ClusterSettings` (the Redis URL, this replica's name, the key prefix, how long a dead
replica's reservations count) and `LimitSettings` (requests per minute and calls in flight, per
persona and per principal). Limits work without `[cluster]`, counted in the process; with it,
across every replica. Which persona a limit names is checked by `registry.Registry`.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mcpgw.config.base import Strict

REPLICA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
"""A replica's name: it starts every session id the replica hands out (`<replica>.<hex>`), so it
must be a plain token a load balancer's pattern can match."""
ENV_REPLICA = "MCPGW_REPLICA"


class ClusterSettings(Strict):
    """`[cluster]`: several mcpgw replicas sharing budgets, limits, streams and approvals on Redis."""

    redis_url: str
    """`redis://[user:password@]host:port/db`, `rediss://...` (TLS) or `unix:///path/redis.sock`."""
    replica: str | None = None
    """This replica's name (default: `$MCPGW_REPLICA`, else the host name): the prefix of its session ids."""
    key_prefix: Annotated[str, Field(min_length=1, max_length=64)] = "mcpgw:"
    """Prefix of every Redis key and channel, so several clusters can share one Redis."""
    lease: Annotated[float, Field(gt=0)] = 300.0
    """Seconds a reservation (a budget hold, a concurrent-call slot) counts without being settled:
    what a replica killed mid-call holds is freed after this."""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
            raise ValueError(f"{url!r} is not a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("replica")
    @classmethod
    def _replica_shape(cls, name: str | None) -> str | None:
        if name is not None and not REPLICA_RE.match(name):
            raise ValueError(f"{name!r} must be 1-32 letters, digits or '-', starting with a letter or digit")
        return name

    def replica_name(self) -> str:
        """`replica`, else `$MCPGW_REPLICA`, else this host's name (cut to a valid token)."""
        if self.replica is not None:
            return self.replica
        name = os.environ.get(ENV_REPLICA) or socket.gethostname().split(".")[0]
        name = re.sub(r"[^A-Za-z0-9-]", "-", name)[:32].strip("-") or "mcpgw"
        if not REPLICA_RE.match(name):
            raise ValueError(f"${ENV_REPLICA} or the host name gives {name!r}, not a valid replica name")
        return name


class RateLimit(Strict):
    """How much one persona (all its callers together) or one principal may ask for."""

    requests_per_minute: Annotated[int, Field(gt=0)] | None = None
    """Calls (`tools/call`, `resources/read`, `prompts/get`, `completion/complete`) per clock minute."""
    concurrent: Annotated[int, Field(gt=0)] | None = None
    """Calls in flight at once."""

    @model_validator(mode="after")
    def _something(self) -> RateLimit:
        if self.requests_per_minute is None and self.concurrent is None:
            raise ValueError("set requests_per_minute, concurrent, or both")
        return self


class LimitSettings(Strict):
    """`[limits]`: rate limits, in this process, or across replicas with `[cluster]`."""

    principal: RateLimit | None = None
    """Each principal alone: its token's subject and client under `[auth]`, else its address."""
    personas: dict[str, RateLimit] = Field(default_factory=dict)
    """Each persona, all its callers together (`default`: requests served without a persona)."""

    @property
    def any(self) -> bool:
        return self.principal is not None or bool(self.personas)
