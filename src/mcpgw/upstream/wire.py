"""The lean request path to a stdio upstream: a forwarded request written as one JSON line, its answer
taken off the read loop as parsed JSON.

Owns: the requests in flight on the lean path (`LeanWire`), their ids, the progress relays of those
that asked for progress, the courtesy cancel of one abandoned (cancelled or timed out), and the
end of the connection for all of them.

Why not the mcp SDK's `ClientSession.send_request` for every request: per forwarded call it builds a
typed request and dumps it, wraps it in a JSON-RPC model, hands it through two memory streams and a
writer task that dumps it again, validates the answer's line into a model and the result into a
dict: measured (py-spy, `bench/run.py`) that was most of the gateway's own CPU per stdio call. Here
the request goes out as one line from the calling task and its answer wakes that task directly; the
SDK's session keeps everything else on the same pipe (the handshake, pings, the upstream's own
requests and notifications), which the read loop hands it as before.

Ids: `FIRST_ID` upwards, integers the SDK's own counter (from 0) never reaches, below 2**53 so a
JavaScript server keeps them exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import orjson

from mcpgw import _compat
from mcpgw.upstream.deadlines import UNLIMITED, Deadlines

logger = logging.getLogger("mcpgw.upstream")

FIRST_ID = 1 << 40
ORJSON_MAX = 64 * 1024
"""Bytes of JSON up to which orjson parses (measured on a 250-byte answer: 3.7 us with the digit check
below, against 9.5 us for the standard library); past it the check costs more than orjson saves."""
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_RUN = b"0" * 19
"""Digits enough for an integer past 64 bits, which orjson would read as a float (a long run of digits
in a string is read the slower way too, correctly)."""
CANCEL_WRITE_TIMEOUT = 2.0
"""Seconds the courtesy `notifications/cancelled` may take to write (a hang guard)."""

UNSIZED = 1 << 62
"""The size an answer is given when its line's length is not known (`LeanWire.take`'s default)."""

ProgressRelay = Callable[[float, float | None, str | None], Awaitable[None]]
Write = Callable[[bytes], Awaitable[None]]
Notify = Callable[[str, dict[str, Any] | None], Awaitable[None]]


class WireClosed(Exception):
    """The connection ended (or could not be written) while a lean request was in flight."""


class LeanWire:
    """Requests sent on one stdio connection outside the SDK's session, and their answers."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._ids = itertools.count(FIRST_ID)
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], int]]] = {}
        self._progress: dict[int, ProgressRelay] = {}
        # One timer for all requests in flight, armed for the earliest deadline, instead of a timer
        # armed and cancelled per request (1.8 us a call, and the loop's heap of cancelled handles).
        self._deadlines = Deadlines()
        self.closed = False
        self.on_log: Notify | None = None
        """Where the upstream's log lines go while lean requests run (the SDK session's own handling)."""
        self.stamp_of: Callable[[str], tuple[dict[str, Any], frozenset[str]]] = _unstamped
        """What the session's stamp puts in a request's `_meta` for a method, and the keys a request's
        own value keeps (`stamp_of`): set once the session's era is negotiated."""
        self._stamps: dict[str, tuple[dict[str, Any], frozenset[str]]] = {}

    async def request(
        self, method: str, params: dict[str, Any], *, timeout: float, on_progress: ProgressRelay | None
    ) -> tuple[dict[str, Any], int]:
        """The upstream's JSON-RPC answer to one request: the whole message (`result` or `error`), and
        the length in bytes of the line it came in (no text in it is longer: `session` skips its size walk).

        Raises `TimeoutError` when no answer came within `timeout` (the upstream is told to stop,
        as the SDK tells it), `WireClosed` when the connection ended first.
        """
        if self.closed:
            raise WireClosed
        request_id = next(self._ids)
        stamp = self._stamps.get(method)
        if stamp is None:  # learnt once per method (the few in `session.LEAN_METHODS`)
            stamp = self._stamps[method] = self.stamp_of(method)
        added, kept = stamp
        if added or on_progress is not None:  # the caller's `params` stay as they were
            meta = params.get("_meta")
            own = meta if isinstance(meta, dict) else {}
            stamped = {**own, **added}
            for key in kept:
                if key in own:
                    stamped[key] = own[key]
            if on_progress is not None:
                stamped["progressToken"] = request_id
                self._progress[request_id] = on_progress
            params = {**params, "_meta": stamped}
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[dict[str, Any], int]] = loop.create_future()
        self._pending[request_id] = future
        line = dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, newline=True)
        written, timer = False, None
        try:
            try:  # `_send`, inlined: one coroutine less per call
                await self._write(line)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise WireClosed from exc
            written = True
            # A timer on the loop, not a cancel scope: anyio's `fail_after` was a tenth of the lean
            # path's own time per call (py-spy).
            if timeout < UNLIMITED:  # no timeout (`inf` in the registry): no timer
                timer = self._deadlines.later(timeout, partial(_expire, future), loop=loop)
            return await future
        except TimeoutError:
            await self._cancel(request_id, f"timed out after {timeout:g}s", shield=False)
            raise
        except anyio.get_cancelled_exc_class():
            if written:
                await self._cancel(request_id, "caller cancelled", shield=True)
            raise
        finally:
            self._pending.pop(request_id, None)
            if on_progress is not None:
                self._progress.pop(request_id, None)
            if timer is not None:
                timer.cancel()

    async def _send(self, data: bytes) -> None:
        try:
            await self._write(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise WireClosed from exc

    async def _cancel(self, request_id: int, reason: str, *, shield: bool) -> None:
        """The courtesy cancel (spec-recommended) so the upstream stops work nobody waits for."""
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": reason},
        }
        with anyio.move_on_after(CANCEL_WRITE_TIMEOUT, shield=shield):
            with contextlib.suppress(WireClosed):
                await self._send(dumps(note, newline=True))

    async def take(self, message: Any, *, size: int = UNSIZED) -> bool:
        """Whether `message` (a parsed line of `size` bytes) was the lean path's: an answer or progress
        of its requests.

        Anything else (the SDK session's answers, the upstream's requests and notifications) is not
        taken, and goes to the SDK's session.
        """
        if not isinstance(message, dict):
            return False
        if self.answered(message, size):
            return True
        if message.get("method") == "notifications/message" and self._pending and self.on_log is not None:
            # A log line said while lean requests run is handed on here, in order: through the SDK's
            # session it could arrive after the answer that follows it, when no call is in flight to
            # own it any more (`upstream.inflight`), and be dropped.
            params = message.get("params")
            await self.on_log("notifications/message", params if isinstance(params, dict) else None)
            return True
        if message.get("method") == "notifications/progress" and self._progress:
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            relay = self._progress.get(token) if type(token) is int else None
            if relay is None or not isinstance(params, dict):
                return False
            await relay_progress(relay, params)
            return True
        return False

    def answered(self, message: Any, size: int = UNSIZED) -> bool:
        """Whether `message` (a parsed line of `size` bytes) was the answer to a lean request: handed to
        its caller (`take`'s part that needs no waiting, so the pipe's protocol callback can do it)."""
        if type(message) is not dict:
            return False
        request_id = message.get("id")
        if type(request_id) is int and request_id >= FIRST_ID and "method" not in message:
            future = self._pending.get(request_id)
            if future is not None and not future.done():
                future.set_result((message, size))
            return True  # an answer to a lean request nobody waits for any more is dropped, as the SDK does
        return False

    def close(self) -> None:
        """The connection ended: every request in flight is told so."""
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WireClosed())
        self._pending.clear()
        self._progress.clear()


def _expire(future: asyncio.Future[Any]) -> None:
    """A lean request's time is up: it times out, unless answered first."""
    if not future.done():
        future.set_exception(TimeoutError())


_OWN = object()


def _unstamped(method: str) -> tuple[dict[str, Any], frozenset[str]]:
    return {}, frozenset()


def stamp_of(client: Any, method: str) -> tuple[dict[str, Any], frozenset[str]]:
    """What `client`'s stamp (`_compat.stamp_request`) puts in a `method` request's `_meta`, and which
    of those keys a request's own value keeps, learnt from two probe requests.

    mcp 2.3: the era's stamp writes the same `_meta` on every request of a method but for a key the
    request sets itself (its log level; its capabilities, `_compat.keep_request_capabilities`); the
    rest of its work (HTTP headers, the tool's `Mcp-Param-*` among them) is nothing to stdio. Learnt
    once per session and method, a lean request is stamped by a dict merge instead of the stamp's
    calls (2-3 us per call).
    """
    probe: dict[str, Any] = {"method": method, "params": {}}
    _compat.stamp_request(client, probe)
    added: dict[str, Any] = probe["params"].get("_meta") or {}
    own: dict[str, Any] = {"method": method, "params": {"_meta": dict.fromkeys(added, _OWN)}}
    _compat.stamp_request(client, own)
    return added, frozenset(key for key, value in own["params"]["_meta"].items() if value is _OWN)


async def relay_progress(relay: ProgressRelay, params: dict[str, Any]) -> None:
    """One `notifications/progress` of a lean request, to its caller's relay (a malformed one is dropped)."""
    progress, total, text = params.get("progress"), params.get("total"), params.get("message")
    if not isinstance(progress, int | float) or isinstance(progress, bool):
        return
    try:
        await relay(
            float(progress),
            float(total) if isinstance(total, int | float) and not isinstance(total, bool) else None,
            text if isinstance(text, str) else None,
        )
    except Exception:  # a relay that failed must not stop the read loop
        logger.exception("relaying an upstream's progress failed")


def parse(data: bytes | str) -> Any:
    """JSON text parsed with orjson, or the standard library where orjson would lose or refuse what
    a JSON-RPC peer may send: an integer over 64 bits (orjson reads it as a float), NaN."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > ORJSON_MAX or _LONG_RUN in raw.translate(_DIGITS):
        return json.loads(raw)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(message: Any, *, newline: bool = False) -> bytes:
    """A message as compact JSON (`newline`: a line): orjson, or the standard library for what orjson
    refuses (integers over 64 bits), so a client's arguments that JSON allows are forwarded as they came."""
    try:
        return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE) if newline else orjson.dumps(message)
    except TypeError:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        return (text + "\n" if newline else text).encode()
