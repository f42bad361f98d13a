"""Sampling budgets shared by every replica: reserve before a model is called, settle after, in Redis.

Owns: `SharedBudgets`, the Redis side of `sampling.budget.Budgets` when `[cluster]` is set. Per
persona and UTC day Redis keeps the spend (a hash: tokens, dollars), the reservations in flight
(a sorted set of ids scored by their lease's end) and each reservation's size (a hash). One Lua
script checks and takes a reservation (Redis runs a script alone, so two replicas cannot both
take the last of a budget); another settles it with what the model used; a third releases it.
A reservation whose replica died is dropped once its lease (`[cluster] lease`) has passed.

Across replicas a request is admitted only when its whole reservation fits: the lone-request
allowance of a single process (`budget` module) would let every replica send one request past
the budget at once. The day's spend then stays within the budget unless a model uses more than
its request reserved (the prompt estimate is approximate). The first replica to use a day's
keys seeds them with what its audit log recorded for that day.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcpgw.cluster import DAY_SECONDS, Cluster, number

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'tokens', ARGV[6], 'usd', ARGV[7])
  redis.call('EXPIRE', KEYS[1], ARGV[9])
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do redis.call('HDEL', KEYS[3], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local spent_t = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
local spent_u = tonumber(redis.call('HGET', KEYS[1], 'usd') or '0')
local held_t, held_u, n = 0, 0, 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do
  local sp = string.find(v, ' ')
  held_t = held_t + tonumber(string.sub(v, 1, sp - 1))
  held_u = held_u + tonumber(string.sub(v, sp + 1))
  n = n + 1
end
local want_t, want_u = tonumber(ARGV[2]), tonumber(ARGV[3])
local limit_t, limit_u = tonumber(ARGV[4]), tonumber(ARGV[5])
local function fits_in(limit, spent, held, want)
  return limit < 0 or (spent + held < limit and spent + held + want <= limit)
end
local fits = fits_in(limit_t, spent_t, held_t, want_t) and fits_in(limit_u, spent_u, held_u, want_u)
if fits then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[8]), ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[9])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
return {fits and 1 or 0, tostring(spent_t), tostring(spent_u), tostring(held_t), tostring(held_u), n}
"""

_SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('HINCRBYFLOAT', KEYS[1], 'tokens', ARGV[2])
  redis.call('HINCRBYFLOAT', KEYS[1], 'usd', ARGV[3])
end
return 1
"""


@dataclass(frozen=True)
class Standing:
    """A persona's day when a reservation was asked for: whether it fit, and the figures it met."""

    fits: bool
    spent_tokens: float
    spent_usd: float
    held_tokens: float
    held_usd: float
    holders: int
    """Other requests in flight holding a reservation (on any replica)."""


class SharedBudgets:
    """Reservations and spend of every replica's sampling requests, per persona and UTC day."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @classmethod
    def of(cls, cluster: Cluster | None) -> SharedBudgets | None:
        """The shared budgets of `cluster`; None without one (budgets are the process's own)."""
        return cls(cluster) if cluster is not None else None

    def _keys(self, persona: str, day: str) -> list[str]:
        return [self.cluster.key("budget", part, persona, day) for part in ("spent", "holds", "sizes")]

    async def reserve(
        self,
        persona: str,
        day: str,
        hold_id: str,
        *,
        tokens: int,
        usd: float,
        limits: tuple[int | None, float | None],
        seed: tuple[float, float],
    ) -> Standing:
        """Take a reservation of `tokens` and `usd` if it fits under `limits` (None: no limit)."""
        limit_tokens, limit_usd = limits
        argv: list[str | int | float] = [
            hold_id,
            tokens,
            repr(usd),
            -1 if limit_tokens is None else limit_tokens,
            -1 if limit_usd is None else repr(limit_usd),
            repr(seed[0]),
            repr(seed[1]),
            self.cluster.settings.lease,
            2 * DAY_SECONDS,
        ]
        async with self.cluster.reached("a sampling request under a budget"):
            keys = self._keys(persona, day)
            answer = await self.cluster.redis.eval(_RESERVE, len(keys), *keys, *argv)  # type: ignore[misc]
        return Standing(
            fits=int(answer[0]) == 1,
            spent_tokens=number(answer[1]),
            spent_usd=number(answer[2]),
            held_tokens=number(answer[3]),
            held_usd=number(answer[4]),
            holders=int(answer[5]),
        )

    async def settle(self, persona: str, day: str, hold_id: str, *, used: tuple[int, float] | None) -> None:
        """Drop the reservation and add what was `used` to the day's spend (None: released, nothing used)."""
        argv: list[str | int] = [hold_id, "", ""] if used is None else [hold_id, used[0], repr(used[1])]
        async with self.cluster.reached("settling a sampling budget"):
            keys = self._keys(persona, day)
            await self.cluster.redis.eval(_SETTLE, len(keys), *keys, *argv)  # type: ignore[misc]

    async def spent(self, persona: str, day: str) -> tuple[float, float]:
        """The day's spend as Redis holds it (tokens, dollars)."""
        async with self.cluster.reached("reading a sampling budget"):
            values = await self.cluster.redis.hmget(self._keys(persona, day)[0], ["tokens", "usd"])  # type: ignore[misc]
        return tuple(0.0 if v is None else number(v) for v in values)  # type: ignore[return-value]
