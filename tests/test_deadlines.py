"""The lean HTTP path's time limits on one shared timer (`upstream.deadlines`) behave as
`asyncio.timeout` and `call_later`: a block past its time gets `TimeoutError`, each at its own time
whatever the order they were set in; a cancellation from elsewhere stays a cancellation; a delayed
call runs once unless cancelled; an owner used on a new loop starts afresh."""

from __future__ import annotations

import asyncio
import math

import anyio
import anyio.abc
import pytest

from mcpgw.upstream.deadlines import Deadlines
from test_gateway import wait_until as until

pytestmark = pytest.mark.anyio

HANG_GUARD = 20


async def test_a_block_past_its_limit_times_out_and_one_within_it_does_not() -> None:
    deadlines = Deadlines()
    with anyio.fail_after(HANG_GUARD):
        with pytest.raises(TimeoutError), deadlines.limit(0.05):
            await asyncio.sleep(HANG_GUARD)
        with deadlines.limit(HANG_GUARD):
            await asyncio.sleep(0)
        with deadlines.limit(math.inf):  # no limit: nothing to fire
            await asyncio.sleep(0.01)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_limits_set_longest_first_each_end_at_their_own_time() -> None:
    """Each limit set sooner than the one the timer waits for re-arms it: the short ones end long
    before the first, longest one would (the wait for them is bounded well short of it)."""
    deadlines = Deadlines()
    ended: list[float] = []

    async def bounded(seconds: float, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with pytest.raises(TimeoutError), deadlines.limit(seconds):
            task_status.started()  # the limit is set: the next one is set after it
            await asyncio.sleep(2 * HANG_GUARD)
        ended.append(seconds)

    async with anyio.create_task_group() as tasks:
        for seconds in (HANG_GUARD, 0.3, 0.05):  # each sooner than the timer was armed for
            await tasks.start(bounded, seconds)
        await until(lambda: len(ended) == 2, timeout=HANG_GUARD / 2)  # a hang guard, short of the first limit
        assert ended == [0.05, 0.3]  # in the order of their times; the longest still running
        tasks.cancel_scope.cancel()


async def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    deadlines = Deadlines()
    with anyio.fail_after(HANG_GUARD):
        with anyio.CancelScope() as outer:
            with deadlines.limit(0.3):  # due after the outer cancellation came
                asyncio.get_running_loop().call_later(0.05, outer.cancel)
                await asyncio.sleep(HANG_GUARD)
        assert outer.cancelled_caught
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_delayed_call_runs_once_unless_cancelled() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    done = anyio.Event()
    deadlines.later(0.2, lambda: ran.append("cancelled")).cancel()
    deadlines.later(0.05, lambda: ran.append("once"))
    deadlines.later(0.3, done.set)
    with anyio.fail_after(HANG_GUARD):
        await done.wait()
    assert ran == ["once"]


def test_an_owner_used_on_a_new_loop_starts_afresh() -> None:
    """What was left pending on the old loop never fires on the new one; limits work on both."""
    deadlines = Deadlines()
    ran: list[str] = []

    async def timed_out(*, first: bool) -> bool:
        if first:  # still pending when this loop ends
            deadlines.later(0.2, lambda: ran.append("stale"))
        try:
            with deadlines.limit(0.05):
                await asyncio.sleep(HANG_GUARD)
        except TimeoutError:
            timed = True
        else:
            timed = False
        if not first:  # due after the stale call's time: the one timer fires them in time order
            done = asyncio.Event()
            deadlines.later(0.3, done.set)
            await asyncio.wait_for(done.wait(), HANG_GUARD)
        return timed

    assert asyncio.run(timed_out(first=True))
    assert asyncio.run(timed_out(first=False))
    assert ran == []
