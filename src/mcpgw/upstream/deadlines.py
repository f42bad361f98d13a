"""Time limits and delayed calls of the lean paths, on one timer of the event loop per owner.

Owns: `Deadlines`, whose `limit(seconds)` bounds a block of the current task as `asyncio.timeout`
does (`TimeoutError` once it is past, the task cancelled to get there), and whose `later(seconds,
callback)` calls `callback` once that time has passed, unless cancelled first (as `call_later`).

Why not `asyncio.timeout` and `call_later`: each arms and disarms a timer of its own per request
(uvloop: a libuv timer made, started, stopped and closed); measured in one process, a block under
`asyncio.timeout` cost four times one under `limit`, and the lean HTTP path has three per call (the
request body's deadline, the upstream POST's, the client watch of `server.stateless`); a stdio
upstream's lean requests (`upstream.wire`) share one too. Here a
request only notes its time, and the one timer is armed again only for a time earlier than the one
it waits for: with one timeout for all calls, the times come in order and the timer is armed about
once per timeout, not once per call.

An owner serves one event loop at a time (a new loop, as in tests, starts it afresh).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger("mcpgw.upstream")

UNLIMITED = 1e9
"""Seconds from which a limit is no limit (`inf` in the registry): nothing is noted."""
_RESOLUTION = time.get_clock_info("monotonic").resolution


class Deadlines:
    """Limits and delayed calls of tasks on one event loop, served by one timer (armed for the earliest)."""

    __slots__ = ("_due", "_loop", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due: dict[_Entry, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def limit(self, seconds: float) -> Limit:
        """A block of the current task bounded to `seconds`, as `asyncio.timeout(seconds)` bounds it."""
        return Limit(self, seconds)

    def later(
        self, seconds: float, callback: Callable[[], object], *, loop: asyncio.AbstractEventLoop | None = None
    ) -> Later:
        """`callback` called once `seconds` have passed, unless the returned handle is cancelled first
        (`loop`: the running one, when the caller has it at hand)."""
        later = Later(callback)
        self._note(later, loop or asyncio.get_running_loop(), seconds)
        return later

    def _note(self, entry: _Entry, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        if loop is not self._loop:
            self._loop, self._due, self._timer, self._timer_at = loop, {}, None, math.inf
        entry.deadline = deadline = loop.time() + seconds
        entry.owner = self
        self._due[entry] = None
        if deadline < self._timer_at:
            self._arm(loop, deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(when, self._fire, loop), when

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer fired: every entry at or past the time it was armed for (when the loop fires it,
        early by a clock step or not, as an entry's own timer would have fired) is due; the timer is
        armed again for the earliest left."""
        if loop is not self._loop:
            return  # armed on a loop since left
        now = max(self._timer_at, loop.time()) + _RESOLUTION
        self._timer, self._timer_at = None, math.inf
        due = sorted((e for e in self._due if e.deadline <= now), key=lambda e: e.deadline)
        for entry in due:  # in the order of their times, as their own timers would have fired
            del self._due[entry]
        for entry in due:
            entry.fire()
        earliest = min((e.deadline for e in self._due), default=math.inf)
        if earliest < self._timer_at:
            self._arm(loop, earliest)


class _Entry:
    __slots__ = ("deadline", "owner")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.owner: Deadlines | None = None

    def fire(self) -> None:
        raise NotImplementedError

    def _forget(self) -> None:
        if self.owner is not None:
            self.owner._due.pop(self, None)


class Later(_Entry):
    """A delayed call (`Deadlines.later`)."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        super().__init__()
        self._callback = callback

    def fire(self) -> None:
        try:
            self._callback()
        except Exception:  # as the loop's own timer would: logged, and the other entries still fire
            logger.exception("a delayed call failed")

    def cancel(self) -> None:
        self._forget()


class Limit(_Entry):
    """A block bounded in time (`Deadlines.limit`), a context manager as `asyncio.timeout` is one."""

    __slots__ = ("_cancelling", "_seconds", "_task", "expired")

    def __init__(self, owner: Deadlines, seconds: float) -> None:
        super().__init__()
        self.owner = owner
        self._seconds = seconds
        self.expired = False

    def __enter__(self) -> Limit:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a time limit must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._seconds < UNLIMITED:
            assert self.owner is not None
            self.owner._note(self, task.get_loop(), self._seconds)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._forget()
        # As `asyncio.timeout` leaves: the cancellation it made is taken back, and becomes
        # `TimeoutError` unless another was asked for meanwhile (then that one goes on).
        if self.expired and self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            raise TimeoutError from exc

    def fire(self) -> None:
        self.expired = True
        self._task.cancel()
