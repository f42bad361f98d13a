"""`[limits]`: requests per minute and calls in flight, per persona and per principal.

Owns: `Limiter`, which admits a call or refuses it with `RateLimited` (its `retry_after` is what
HTTP sends as `Retry-After`), and the `Ticket` a call holds while it runs. Requests are counted
per clock minute (UTC), which a person can check against a log; a refusal for the minute says
to retry when the next one starts, one for calls in flight says to retry in a second. A refused
call is never counted, so retrying clients cannot lock themselves out.

Without `[cluster]` the counts live in this process. With it they live in Redis and one Lua
script checks and takes every limit of a call at once (all or none), so replicas never admit
more together than one process would; a slot in flight is a member of a sorted set scored by its
lease, so what a replica killed mid-call held is freed after `[cluster] lease` seconds. The
settings are read per call, so a registry reload applies at once.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from mcpgw.cluster import Cluster
from mcpgw.config import DEFAULT_PERSONA, LimitSettings, RateLimit
from mcpgw.errors import RateLimited
from mcpgw.observe.logs import counted

CONCURRENT_RETRY = 1
"""Seconds a call refused for too many in flight is told to wait."""

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local minute = math.floor(tonumber(t[1]) / 60)
local token, lease = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 2
for i = 1, n do
  local rpm, conc = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  if rpm > 0 then
    local used = tonumber(redis.call('GET', KEYS[i] .. ':' .. minute) or '0')
    if used >= rpm then return {i, 'rpm', 60 - (tonumber(t[1]) % 60)} end
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[n + i], '-inf', now)
    if redis.call('ZCARD', KEYS[n + i]) >= conc then return {i, 'concurrent', 1} end
  end
end
for i = 1, n do
  local rpm, conc = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  if rpm > 0 then
    local key = KEYS[i] .. ':' .. minute
    redis.call('INCR', key)
    redis.call('EXPIRE', key, 120)
  end
  if conc > 0 then
    redis.call('ZADD', KEYS[n + i], now + lease, token)
    redis.call('EXPIRE', KEYS[n + i], math.ceil(lease) + 60)
  end
end
return {0}
"""


@dataclass(frozen=True)
class _Scope:
    """One limit a call counts against: a persona's or a principal's."""

    kind: str
    """`persona` or `principal`."""
    name: str
    limit: RateLimit

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass(eq=False)
class Ticket:
    """A call admitted: the slots it holds until `release`."""

    scopes: tuple[_Scope, ...] = ()
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    released: bool = False


class Limiter:
    """Admits calls within `[limits]` (read from `settings()` per call), in process or on Redis."""

    def __init__(self, settings: Callable[[], LimitSettings], *, cluster: Cluster | None = None) -> None:
        self._settings = settings
        self.cluster = cluster
        self._minute = 0
        """The clock minute `_counts` counts (a new minute starts them all at 0)."""
        self._counts: dict[tuple[str, str], int] = {}
        """(kind, name) -> requests admitted this minute, in process."""
        self._in_flight: dict[tuple[str, str], int] = {}

    @property
    def active(self) -> bool:
        return self._settings().any

    def _scopes(self, persona: str | None, principal: str | None) -> tuple[_Scope, ...]:
        settings = self._settings()
        scopes = []
        name = persona or DEFAULT_PERSONA
        if name in settings.personas:
            scopes.append(_Scope("persona", name, settings.personas[name]))
        if settings.principal is not None and principal is not None:
            scopes.append(_Scope("principal", principal, settings.principal))
        return tuple(scopes)

    async def admit(self, persona: str | None, principal: str | None) -> Ticket:
        """A ticket for one call, or `RateLimited` saying which limit and when to retry."""
        scopes = self._scopes(persona, principal)
        if not scopes:
            return Ticket()
        if self.cluster is not None:
            return await self._admit_shared(scopes)
        return self._admit_here(scopes)

    async def release(self, ticket: Ticket) -> None:
        """Free the call's slots (once)."""
        if ticket.released or not ticket.scopes:
            return
        ticket.released = True
        if self.cluster is None:
            for scope in ticket.scopes:
                key = (scope.kind, scope.name)
                if scope.limit.concurrent is not None and self._in_flight.get(key):
                    self._in_flight[key] -= 1
                    if not self._in_flight[key]:
                        del self._in_flight[key]
            return
        cluster = self.cluster
        concurrent = [s for s in ticket.scopes if s.limit.concurrent is not None]
        if concurrent:
            async with cluster.reached("releasing a rate-limit slot"):
                pipe = cluster.redis.pipeline(transaction=False)
                for scope in concurrent:
                    pipe.zrem(self._key(cluster, "inflight", scope), ticket.token)
                await pipe.execute()

    def _admit_here(self, scopes: tuple[_Scope, ...]) -> Ticket:
        now = time.time()
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._counts = minute, {}
        for scope in scopes:
            key = (scope.kind, scope.name)
            rpm = scope.limit.requests_per_minute
            if rpm is not None and self._counts.get(key, 0) >= rpm:
                raise _refusal(scope, "rpm", math.ceil(60 - now % 60))
            if scope.limit.concurrent is not None and self._in_flight.get(key, 0) >= scope.limit.concurrent:
                raise _refusal(scope, "concurrent", CONCURRENT_RETRY)
        for scope in scopes:
            key = (scope.kind, scope.name)
            if scope.limit.requests_per_minute is not None:
                self._counts[key] = self._counts.get(key, 0) + 1
            if scope.limit.concurrent is not None:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return Ticket(scopes)

    async def _admit_shared(self, scopes: tuple[_Scope, ...]) -> Ticket:
        cluster = self.cluster
        assert cluster is not None
        ticket = Ticket(scopes)
        keys = [self._key(cluster, "rpm", s) for s in scopes] + [
            self._key(cluster, "inflight", s) for s in scopes
        ]
        argv: list[str | float] = [ticket.token, cluster.settings.lease]
        for scope in scopes:
            argv += [scope.limit.requests_per_minute or 0, scope.limit.concurrent or 0]
        async with cluster.reached("a call under [limits]"):
            answer = await cluster.redis.eval(_ADMIT, len(keys), *keys, *argv)  # type: ignore[misc]
        if int(answer[0]) != 0:
            scope = scopes[int(answer[0]) - 1]
            raise _refusal(scope, answer[1].decode(), max(1, int(answer[2])))
        return ticket

    @staticmethod
    def _key(cluster: Cluster, what: str, scope: _Scope) -> str:
        return cluster.key("limits", what, scope.kind, scope.name)


def _refusal(scope: _Scope, which: str, retry_after: int) -> RateLimited:
    if which == "rpm":
        limit, noun, unit = scope.limit.requests_per_minute, "request", "per minute"
    else:
        limit, noun, unit = scope.limit.concurrent, "call", "in flight"
    assert limit is not None  # the limit that refused is set
    reason = f"{counted(limit, noun)} {unit}"
    return RateLimited(
        f"rate limit: {scope.describe()} is limited to {reason} ([limits]); retry in {retry_after}s",
        retry_after=retry_after,
    )
