"""A 2026-07-28 client's call held open while its handshake-era upstream asks for input.

Owns: `Exchange`, the state of one such call: the requests the upstream sent
mcpgw, handed to the client as `input_required` results, and the client's
answers carried back on its retry. The `requestState` that names the exchange
on the wire is sealed by `bridge.state`; the exchange's own id never leaves
the gateway.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from mcpgw.errors import SamplingFailed, SamplingRefused
from mcpgw.upstream.inflight import LogSink
from mcpgw.upstream.session import ProgressRelay

logger = logging.getLogger("mcpgw.bridge")

EXCHANGE_KEEP = 300.0
"""Seconds a finished exchange waits for its client's last retry before it is forgotten."""
HELD_PROGRESS = 32
"""Progress notifications kept for the client's next request (the latest ones)."""


@dataclass
class _Pending:
    request: dict[str, Any]
    answered: anyio.Event
    response: dict[str, Any] | None = None


class Exchange:
    """A 2026-07-28 client's call whose handshake-era upstream asks for sampling or elicitation.

    Such a client cannot be sent requests; it answers `input_required` results. The upstream
    call keeps running in the gateway's task group; each request it sends mcpgw is handed to
    the client in an `input_required` result (its sealed `requestState` names this exchange),
    and the client's retry carries the answers back to the waiting upstream.
    """

    def __init__(self, *, timeout: float) -> None:
        self.id = uuid.uuid4().hex
        self.timeout = timeout
        self.pending: dict[str, _Pending] = {}
        self.changed = anyio.Event()
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.finished_at: float | None = None
        self.listening: LogSink | None = None
        """The log sink of the client's request waiting on this exchange now, if one is."""
        self.progress_to: ProgressRelay | None = None
        """The progress relay of the client's request waiting on this exchange now, if one is."""
        self._held_progress: list[tuple[float, float | None, str | None]] = []

    async def log(self, level: str, data: Any, name: str | None) -> None:
        """The upstream call's log sink: lines go to the client's request waiting now, if any."""
        if self.listening is not None:
            await self.listening(level, data, name)
        else:
            logger.debug("upstream log (%s, not relayed: no client request is waiting): %s", level, data)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """The upstream call's progress relay: to the client's request waiting now, else to the next.

        Between the client's requests (it is answering an `input_required` result) the progress is
        held for its retry, the same call's continuation, rather than lost: the upstream's progress
        and its request for input can cross on their way through the gateway.
        """
        if self.progress_to is not None:
            await self.progress_to(progress, total, message)
        else:
            self._held_progress = [*self._held_progress[-(HELD_PROGRESS - 1) :], (progress, total, message)]

    async def deliver_held_progress(self) -> None:
        """Send the progress held since the client's last request to the request waiting now."""
        held, self._held_progress = self._held_progress, []
        if self.progress_to is not None:
            for progress, total, message in held:
                await self.progress_to(progress, total, message)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The `ClientChannel.send` of the upstream call: waits for the client's retry."""
        key = f"mcpgw-{len(self.pending) + 1}"
        pending = _Pending({"method": method, "params": params}, anyio.Event())
        self.pending[key] = pending
        self.changed.set()
        with anyio.move_on_after(self.timeout):
            await pending.answered.wait()
        if pending.response is None:
            raise SamplingRefused(
                f"the client did not answer the upstream's {method} within {self.timeout:g}s"
            )
        return pending.response

    def answer(self, responses: Mapping[str, Any]) -> None:
        """Deliver the client's answers; keys the exchange did not ask, or already has, are ignored."""
        for key, response in responses.items():
            pending = self.pending.get(key)
            if pending is not None and not pending.answered.is_set() and isinstance(response, dict):
                pending.response = response
                pending.answered.set()

    def finish(self, result: dict[str, Any] | None, error: BaseException | None) -> None:
        self.result, self.error, self.done = result, error, True
        self.finished_at = time.monotonic()
        self.changed.set()

    async def next(self) -> dict[str, Any]:
        """The call's result once the upstream finishes, or `input_required` while it waits on the client.

        The `input_required` result has no `requestState` yet: the bridge seals one for it.
        """
        while True:
            self.changed = anyio.Event()
            if self.done:
                if self.error is not None:
                    raise self.error
                if self.result is None:
                    raise SamplingFailed("the upstream call was cancelled (the gateway is stopping)")
                return self.result
            asked = {k: p.request for k, p in self.pending.items() if not p.answered.is_set()}
            if asked:
                return {"resultType": "input_required", "inputRequests": asked}
            await self.changed.wait()
