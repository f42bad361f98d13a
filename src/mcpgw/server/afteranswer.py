"""A request's own bookkeeping, run once its answer is on its way to the client.

Owns: `later`, which runs a piece of the current request's bookkeeping (its audit row handed to the
writer, its metrics, its access-log line) after the request's answer is written, when the transport
serving it takes care of that (`begin`, the stdio lean lane: `leanlane`); otherwise at once, as before.

Why: the client waits for the answer line, not for the row to be queued. The lane writes the answer
and runs the work before its task next yields, so nothing else runs in between: rows are still queued
in the order requests completed. A request that is never answered (cancelled) runs it all the same.
Rows that must be committed before the caller goes on (refusals: `audit.durable`) are not deferred.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

logger = logging.getLogger("mcpgw.server")


class AfterAnswer:
    """The bookkeeping one request has deferred until its answer is written."""

    __slots__ = ("_done", "_work")

    def __init__(self) -> None:
        self._work: list[Callable[[], None]] = []
        self._done = False

    def run(self) -> None:
        """Run what was deferred (once; work deferred after this runs at once)."""
        self._done = True
        work, self._work = self._work, []
        for item in work:
            try:
                item()
            except Exception:  # the answer is out: a failure here is the gateway's, logged
                logger.exception("a request's bookkeeping failed after its answer")


_pending: ContextVar[AfterAnswer | None] = ContextVar("mcpgw_after_answer", default=None)


def begin() -> AfterAnswer:
    """Defer the current task's request bookkeeping until `run` (call in the request's own task)."""
    pending = AfterAnswer()
    _pending.set(pending)
    return pending


def later(work: Callable[[], None]) -> None:
    """Run `work` once the current request's answer is written, if its transport defers; else now."""
    pending = _pending.get()
    if pending is None or pending._done:
        work()
    else:
        pending._work.append(work)
