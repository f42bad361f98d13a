"""Repeated refusals folded into one audit row per interval, with a count.

Owns: the window each refusal opens for its key (what was refused and where, and from
whom: the caller picks the key, never from free text a client chose), the count of the
refusals one row stands for, and the bound on how many keys can be open at once. An
unauthenticated client can send refusals as fast as the network allows; folded, that costs
one row per key per `interval`, not one per request.

The first refusal of a window becomes a row (written before it is answered); the others
of the window only raise that row's count (`AuditLog.recount`), so the counts of a window's
rows add up to the refusals. Past `max_keys` open windows, new keys share one overflow
window, so neither the table nor this map can be grown by varying what the key is made of.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from mcpgw.audit.step import new_request_id, now

FOLD_INTERVAL = 10.0
"""Seconds one row stands for, per key."""
MAX_KEYS = 1000
OVERFLOW = ("overflow",)
"""The key refusals share once `max_keys` windows are open."""


@dataclass
class Fold:
    """One key's window: the row that stands for it, and how many refusals it counts."""

    key: Hashable
    opened: float
    request_id: str = field(default_factory=lambda: new_request_id())
    count: int = 1
    first: str = field(default_factory=now)
    last: str = ""
    previous: int = 0
    """How many refusals the key's window before this one counted (0: none was open)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What the caller adds to the row's result (e.g. the peer), fixed when the window opens."""

    def __post_init__(self) -> None:
        self.last = self.last or self.first

    @property
    def new(self) -> bool:
        """This refusal opened the window: it becomes a row (the others add to its count)."""
        return self.count == 1

    @property
    def overflow(self) -> bool:
        return self.key == OVERFLOW

    def result(self) -> dict[str, Any]:
        """The row's `result`: the count and the window's first and last refusal."""
        return {**self.detail, "count": self.count, "first": self.first, "last": self.last}


class Folds:
    """The open windows of one kind of refusal (not thread-safe: one event loop adds to it)."""

    def __init__(
        self,
        *,
        interval: float = FOLD_INTERVAL,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._open: dict[Hashable, Fold] = {}

    def add(self, key: Hashable, *, detail: dict[str, Any] | None = None) -> Fold:
        """Count one refusal under `key`: the window it joins, or the one it opened (`new`)."""
        moment = self._clock()
        fold = self._open.get(key)
        if fold is not None and moment - fold.opened < self.interval:
            fold.count += 1
            fold.last = now()
            return fold
        if fold is None and key != OVERFLOW and len(self._open) >= self.max_keys:
            self._forget(moment)
            if len(self._open) >= self.max_keys:
                return self.add(OVERFLOW, detail={})
        opened = Fold(key, moment, previous=fold.count if fold else 0, detail=dict(detail or {}))
        self._open.pop(key, None)  # re-inserted last: the map stays in the order windows opened
        self._open[key] = opened
        return opened

    def _forget(self, moment: float) -> None:
        """Drop the windows that are over (their rows are final): the oldest first, so this is cheap."""
        while self._open:
            key, oldest = next(iter(self._open.items()))
            if moment - oldest.opened < self.interval:
                return
            del self._open[key]
