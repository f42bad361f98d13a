"""Per-persona daily sampling budgets: `tokens_per_day` and `usd_per_day`, in UTC days.

Owns each persona's running spend for today (seeded once a day from the audit
log, so budgets survive a restart), the reservations of the requests in flight,
and refusing a request before anything is sent when it does not fit.

A request reserves before it is sent (`Budgets.hold`): its `maxTokens` plus an
estimate of its prompt (`prompt_tokens`: a token per four characters), and the
dollars that costs at its routes' prices where they are known. It is admitted
when its reservation fits in what today's spend and the other requests'
reservations leave; a request with none in flight beside it is admitted while
anything is left, as a lone request always was. Once the model answers, the
reservation is settled with the real usage; a request that fails or is
cancelled releases it. Concurrent requests therefore cannot spend more than the
budget together; the day's spend exceeds it by at most what one request uses
(the lone one), or by what requests use beyond their reservation (the prompt
estimate is approximate; a route without prices reserves no dollars).

With `[cluster]`, reservations and spend live in Redis (`cluster.budgets`), shared by every
replica, and a request is admitted only when its whole reservation fits (see there why).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from mcpgw.audit import Store, spend
from mcpgw.config import DEFAULT_PERSONA, SamplingScope, SamplingSettings
from mcpgw.errors import SamplingRefused

if TYPE_CHECKING:
    from mcpgw.cluster.budgets import SharedBudgets

_UNCOUNTED = frozenset({"data", "blob", "_meta"})
"""Keys whose values are not prompt text: base64 images and audio, metadata."""


def _usd(amount: float) -> str:
    """Dollars as people read them: cents for real budgets, micro-dollars for tiny ones."""
    return f"{amount:.2f}" if amount >= 0.01 else f"{amount:.6f}"


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _count(amount: float) -> str:
    return str(int(amount))


def _dollars(amount: float) -> str:
    return f"${_usd(amount)}"


def _fits(limit: float, spent: float, held: float, wanted: float, *, alone: bool) -> bool:
    """Whether a reservation of `wanted` fits; a request alone needs only something left, as before."""
    if alone:
        return spent < limit
    return spent + held < limit and spent + held + wanted <= limit


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(str(k)) + _chars(v) for k, v in value.items() if k not in _UNCOUNTED)
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    return 0 if value is None else len(str(value))


def prompt_tokens(params: Mapping[str, Any], *, context: str | None = None) -> int:
    """An estimate of a sampling request's prompt: a token per four characters of what is sent.

    Counts the messages (their keys too, roughly what their JSON costs), the system prompt,
    the `includeContext` text and the tools; not images' or audio's base64 data.
    """
    chars = sum(_chars(params.get(key)) for key in ("messages", "systemPrompt", "tools"))
    return -(-(chars + len(context or "")) // 4)


@dataclass(eq=False)  # identity: two holds of the same size are still two requests
class Hold:
    """One request's reservation against its persona's budget today; settled or released once."""

    persona: str
    day: str
    tokens: int
    usd: float
    done: bool = False
    """Settled or released: it no longer counts."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    shared: bool = False
    """Held in the cluster's Redis (`cluster.budgets`), not in this process."""


class Budgets:
    """What each persona spent on sampling today, what its requests in flight hold, and whether more fits."""

    def __init__(
        self,
        settings: SamplingSettings,
        *,
        audit: Store | None = None,
        shared: SharedBudgets | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        """The cluster's budgets (`[cluster]`): reservations and spend shared by every replica."""
        self.audit = audit
        """The audit store spend is read back from (None: no log, every day starts at 0)."""
        self._spent: dict[tuple[str, str], list[float]] = {}
        """(persona, UTC day) -> [tokens, usd]; seeded from the audit log at first use."""
        self._held: dict[tuple[str, str], list[Hold]] = {}
        """(persona, UTC day) -> the reservations of its requests in flight."""

    def _budget(self, persona: str | None) -> SamplingScope | None:
        scope = self.settings.personas.get(persona or DEFAULT_PERSONA)
        if scope is None or (scope.tokens_per_day is None and scope.usd_per_day is None):
            return None
        return scope

    def spent(self, persona: str | None) -> tuple[int, float]:
        tokens, usd = self._spent_today(persona)
        return int(tokens), usd

    def held(self, persona: str | None) -> tuple[int, float]:
        """What `persona`'s requests in flight have reserved today (tokens, dollars)."""
        holds = self._held.get((persona or DEFAULT_PERSONA, _today()), [])
        return sum(h.tokens for h in holds), sum(h.usd for h in holds)

    def charge(self, persona: str | None, *, tokens: int, usd: float) -> None:
        """Add what a model's answer used to `persona`'s spend today."""
        spent = self._spent_today(persona)
        spent[0] += tokens
        spent[1] += usd

    def _spent_today(self, persona: str | None) -> list[float]:
        """The running [tokens, usd] of `persona` today, seeded once per day from the audit log."""
        key = (persona or DEFAULT_PERSONA, _today())
        if key not in self._spent:
            seed = spend.spent_by(self.audit, key[0], since=key[1]) if self.audit is not None else (0.0, 0.0)
            self._spent[key] = list(seed)
        return self._spent[key]

    @contextmanager
    def hold(self, persona: str | None, *, tokens: int, usd: float) -> Iterator[Hold]:
        """Reserve `tokens` and `usd` for one request (`SamplingRefused` when they do not fit).

        Inside the block the request runs; `settle` it with what it used once the model answers.
        A hold left unsettled (the request failed, or was cancelled) is released on the way out.
        """
        hold = self.reserve(persona, tokens=tokens, usd=usd)
        try:
            yield hold
        finally:
            self._drop(hold)

    def reserve(self, persona: str | None, *, tokens: int, usd: float) -> Hold:
        """A reservation for one request, or `SamplingRefused` when it does not fit (see the module)."""
        name = persona or DEFAULT_PERSONA
        hold = Hold(persona=name, day=_today(), tokens=max(0, tokens), usd=max(0.0, usd))
        scope = self._budget(persona)
        if scope is None:
            return hold
        others = self._held.get((name, hold.day), [])
        (spent_tokens, spent_usd), (held_tokens, held_usd) = self.spent(persona), self.held(persona)
        measures = (
            (scope.tokens_per_day, spent_tokens, held_tokens, hold.tokens, _count, " tokens"),
            (scope.usd_per_day, spent_usd, held_usd, hold.usd, _dollars, ""),
        )
        for limit, spent, held, wanted, show, unit in measures:
            if limit is None or _fits(limit, spent, held, wanted, alone=not others):
                continue
            raise _refused(name, limit, spent, held, len(others), wanted, show, unit)
        self._held.setdefault((name, hold.day), []).append(hold)
        return hold

    def settle(self, hold: Hold, *, tokens: int, usd: float) -> None:
        """Replace `hold`'s reservation with what its request really used."""
        if hold.done:
            return
        self._drop(hold)
        self.charge(hold.persona, tokens=tokens, usd=usd)

    def _drop(self, hold: Hold) -> None:
        """Release `hold` (once): its reservation no longer counts."""
        if hold.done:
            return
        hold.done = True
        holds = self._held.get((hold.persona, hold.day))
        if holds is not None and hold in holds:
            holds.remove(hold)
            if not holds:
                del self._held[(hold.persona, hold.day)]

    # --- across replicas ([cluster]) ----------------------------------------------------------------

    @asynccontextmanager
    async def holding(self, persona: str | None, *, tokens: int, usd: float) -> AsyncIterator[Hold]:
        """`hold`, in this process or in the cluster's Redis; settle inside with `settled`."""
        if self.shared is None:
            with self.hold(persona, tokens=tokens, usd=usd) as hold:
                yield hold
            return
        hold = await self._reserve_shared(persona, tokens=tokens, usd=usd)
        try:
            yield hold
        finally:
            if hold.shared and not hold.done:
                hold.done = True
                with anyio.CancelScope(shield=True):  # a cancelled request still frees its reservation
                    await self.shared.settle(hold.persona, hold.day, hold.id, used=None)

    async def settled(self, hold: Hold, *, tokens: int, usd: float) -> None:
        """`settle`, where `hold` was taken."""
        if not hold.shared:
            self.settle(hold, tokens=tokens, usd=usd)
            return
        if hold.done or self.shared is None:
            return
        hold.done = True
        with anyio.CancelScope(shield=True):  # what the model used is spent, cancelled or not
            await self.shared.settle(hold.persona, hold.day, hold.id, used=(tokens, usd))

    async def _reserve_shared(self, persona: str | None, *, tokens: int, usd: float) -> Hold:
        assert self.shared is not None
        name = persona or DEFAULT_PERSONA
        hold = Hold(persona=name, day=_today(), tokens=max(0, tokens), usd=max(0.0, usd))
        scope = self._budget(persona)
        if scope is None:
            return hold  # no budget: nothing to share; the audit log still counts its spend
        seed = self._spent_today(persona)
        standing = await self.shared.reserve(
            name,
            hold.day,
            hold.id,
            tokens=hold.tokens,
            usd=hold.usd,
            limits=(scope.tokens_per_day, scope.usd_per_day),
            seed=(seed[0], seed[1]),
        )
        if not standing.fits:
            measures = (
                (
                    scope.tokens_per_day,
                    standing.spent_tokens,
                    standing.held_tokens,
                    hold.tokens,
                    _count,
                    " tokens",
                ),
                (scope.usd_per_day, standing.spent_usd, standing.held_usd, hold.usd, _dollars, ""),
            )
            for limit, spent, held, wanted, show, unit in measures:
                if limit is not None and not _fits(limit, spent, held, wanted, alone=False):
                    raise _refused(name, limit, spent, held, standing.holders, wanted, show, unit)
            raise SamplingRefused(f"persona {name!r} has used its sampling budget for today")
        hold.shared = True
        return hold


def _refused(
    name: str, limit: float, spent: float, held: float, others: int, wanted: float, show: Any, unit: str
) -> SamplingRefused:
    detail = f"{show(spent)} of {show(limit)}{unit}"
    if others:
        detail += (
            f", {show(held)} more held by {others} request(s) in flight,"
            f" and this request may use up to {show(wanted)}{unit}"
        )
    elif wanted and spent < limit:
        detail += f", and this request may use up to {show(wanted)}{unit}"
    return SamplingRefused(
        f"persona {name!r} has used its sampling budget for today ({detail}); it renews at 00:00 UTC"
    )
