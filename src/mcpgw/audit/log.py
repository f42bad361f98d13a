"""The audit log's writer: every row to its store (SQLite or PostgreSQL), off the hot path.

Owns: the one writer thread, which turns steps and events into rows (`rows`) and
inserts them in batches through a `store.Connection`; which rows are written
before the request is answered (`durable`), the count updates of folded refusals
(`recount`), the bounded retry buffer that keeps rows when the disk or the database
server fails (and counts what it had to drop; each retry opens a new connection, so
a server that went away and came back is written to again), flushing on shutdown,
and opening the log `[audit]` configures.

An ordinary request only appends to a queue; it never waits on the disk, so a
crash (`kill -9`) loses at most the rows of the last batch interval
(`BATCH_INTERVAL`). A refusal or a security event is different: its caller
waits (at most `DURABLE_WAIT`, and not while the disk is failing) until the
writer has committed it, so what was refused or withheld is on disk before the
client hears of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mcpgw.audit.queries import prune
from mcpgw.audit.redact import Redactor
from mcpgw.audit.rows import Rows, Values, spend
from mcpgw.audit.step import Kind, Outcome, Step, new_request_id, now
from mcpgw.audit.store import Connection, SqliteStore, Store, StoreError, instance_name, store_for
from mcpgw.detectors import Detector
from mcpgw.observe.logs import counted

logger = logging.getLogger("mcpgw.audit")

_BATCH = 500
BATCH_INTERVAL = 0.05
"""Seconds the writer lets ordinary rows gather before one commit: the most a crash can lose."""
DURABLE_WAIT = 2.0
"""The longest a refusal or security event waits for its commit (the disk may be slow or locked)."""
DURABLE_KINDS = frozenset({Kind.AUTH, Kind.SECURITY})
DURABLE_OUTCOMES = frozenset(
    {Outcome.DENIED, Outcome.WITHHELD, Outcome.BLOCKED, Outcome.WARNING, Outcome.REFUSED}
)


def durable(kind: Kind, outcome: Outcome) -> bool:
    """Whether a row is committed before its caller goes on: refusals and security events."""
    return kind in DURABLE_KINDS or outcome in DURABLE_OUTCOMES


@dataclass
class _Recount:
    """A new `result` for a row already written (a folded refusal's count)."""

    request_id: str
    result: str


_Item = dict[str, Any] | Step | _Recount
_Done = Callable[[], None]
"""Called on the writer thread once a durable row is committed (or kept for a retry)."""
_Pending = tuple[Values, _Done | None]


class AuditLog:
    """Queue plus one writer thread. Ordinary rows never block their caller; `close` flushes."""

    def __init__(
        self,
        path: Path | Store,
        *,
        redactor: Redactor | None = None,
        max_buffer: int = 100_000,
        instance: str | None = None,
        every_request: bool = False,
    ) -> None:
        self.store = path if isinstance(path, Store) else SqliteStore(path)
        """Where the rows go: a SQLite file (a `Path` given is one) or a PostgreSQL database."""
        self.path = self.store.path
        """The SQLite file; None for a database server."""
        self.instance = instance
        """Written on every row: which gateway wrote it, when several share one database."""
        self.every_request = every_request
        """`[audit] durable = "all"`: a request is answered once its row is committed (`commit`, which
        the request path awaits: `server.handlers._recorded`)."""
        self.redactor = redactor or Redactor()
        self._rows = Rows(self.redactor, instance=instance)
        self.max_buffer = max_buffer
        self.dropped = 0
        self.written = 0
        self._queue: queue.SimpleQueue[tuple[_Item, _Done | None] | None] = queue.SimpleQueue()
        self._pending: deque[_Pending] = deque()
        self._recounts: dict[str, str] = {}
        """Count updates of folded refusals, applied once every row before them is written."""
        self._urgent = threading.Event()
        """Set when a durable row is queued: the writer commits at once instead of gathering a batch."""
        self._failing = False
        self._connection: Connection | None = None
        """The writer thread's; replaced after a failure."""
        self._full = False
        """The retry buffer reached `max_buffer` during this failure (said once, then counted)."""
        self._thread: threading.Thread | None = None
        self._prepare()

    # --- set-up ----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create (or migrate) the database now, so a bad path or URL is a clear error at start."""
        self.store.prepare()

    @property
    def queued(self) -> int:
        """Rows not yet written: queued for the writer, or held for a retry (read by metrics)."""
        return self._queue.qsize() + len(self._pending)

    def start(self) -> AuditLog:
        self._thread = threading.Thread(target=self._run, name="mcpgw-audit", daemon=True)
        self._thread.start()
        return self

    # --- the hot path ----------------------------------------------------------------------------

    def record_step(self, step: Step) -> None:
        """Queue a finished step (made a redacted row on the writer thread); a refusal or security
        step is committed before this returns (see `durable`)."""
        step.latency_ms = (time.perf_counter() - step.started) * 1000
        self._put_and_wait(step, durable=durable(step.kind, step.outcome))

    async def commit(self, step: Step) -> None:
        """Record `step` and wait until it is on disk, holding up neither the event loop nor a worker
        thread meanwhile (at most `DURABLE_WAIT`; not at all while the disk is failing).

        The writer thread wakes the waiting request through the event loop. The gateway runs on
        asyncio (uvicorn, or anyio's default backend over stdio); anyio's own way, a worker thread
        per waiter, would cap how many requests can wait for one shared commit."""
        step.latency_ms = (time.perf_counter() - step.started) * 1000
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, committed)

        # Queued now: whatever is queued after lands after it.
        if not self._put(step, durable=True, done=done):
            return
        with anyio.move_on_after(DURABLE_WAIT) as waited:
            await committed
        if waited.cancelled_caught:
            logger.warning("audit log: a row waited over %gs for the database", DURABLE_WAIT)

    def event(
        self,
        kind: Kind,
        *,
        server: str | None = None,
        name: str | None = None,
        outcome: Outcome = Outcome.OK,
        error: str | None = None,
        request_id: str | None = None,
        method: str | None = None,
        persona: str | None = None,
        latency_ms: float | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        """A row that is not a client request: upstream state changes, configuration loads, security
        problems, sampling requests. `result` is the gateway's own accounting (no client data), stored
        as JSON with its strings cleaned like any column. A security event is committed before this
        returns."""
        kind, outcome = Kind(kind), Outcome(outcome)
        row = {
            "ts": now(),
            "request_id": request_id or new_request_id(),
            "parent": None,
            "kind": kind.value,
            "method": method,
            "persona": persona,
            "principal": None,
            "session": None,
            "client": None,
            "protocol": None,
            "server": server,
            "name": name,
            "outcome": outcome.value,
            "error": error,
            "latency_ms": None if latency_ms is None else round(latency_ms, 3),
            "arg_bytes": 0,
            "result_bytes": 0,
            "arguments": None,
            "result": self._rows.accounting(result) if result is not None else None,  # a copy, cleaned now
            "findings": None,
            **spend(kind, result),
        }
        self._put_and_wait(row, durable=durable(kind, outcome))

    def recount(self, request_id: str, result: Mapping[str, Any]) -> None:
        """Replace the `result` of the row `request_id` (a folded refusal's running count), soon."""
        self._queue.put((_Recount(request_id, json.dumps(self._rows.accounting(result))), None))

    def _put(self, item: _Item, *, durable: bool, done: _Done | None = None) -> bool:
        """Queue `item`. A durable one (with a writer running and the disk not failing) is committed
        at once, and `done` is called once it is: whether it will be."""
        if not durable or self._thread is None or self._failing:
            self._queue.put((item, None))
            return False
        self._queue.put((item, done or _nothing))
        self._urgent.set()
        return True

    def _put_and_wait(self, item: _Item, *, durable: bool) -> None:
        if not durable:  # nothing waits: no `threading.Event` (a lock and a condition) per request
            self._put(item, durable=False)
            return
        done = threading.Event()
        if self._put(item, durable=True, done=done.set) and not done.wait(DURABLE_WAIT):
            logger.warning("audit log: a refusal or security row waited over %gs for the disk", DURABLE_WAIT)

    # --- rows ------------------------------------------------------------------------------------

    # --- the writer ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                batch, stop = self._take()
                self._pending.extend(batch)
                self._flush()
        finally:
            self._flush()
            if self._pending:
                logger.error("audit log: %d rows could not be written at shutdown", len(self._pending))
            if self.dropped:
                logger.error(
                    "audit log: %d rows were dropped in all (buffer full while the disk failed)", self.dropped
                )
            if self._connection is not None:
                self._connection.close()

    def _take(self) -> tuple[list[_Pending], bool]:
        """Wait for a row, then let more gather for a moment: one commit per interval, not per call.
        A durable row cuts the moment short: it is committed at once."""
        batch: list[_Pending] = []
        try:
            entry = self._queue.get(timeout=1.0)
        except queue.Empty:
            return batch, False
        if entry is not None and entry[1] is None:
            self._urgent.wait(BATCH_INTERVAL if not self._failing else 1.0)
        self._urgent.clear()
        while True:
            if entry is None:
                return batch, True
            item, done = entry
            if isinstance(item, _Recount):
                self._recounts[item.request_id] = item.result
            else:
                batch.append(
                    (self._rows.step(item) if isinstance(item, Step) else self._rows.event(item), done)
                )
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _connected(self) -> Connection:
        if self._connection is None:
            self._connection = self.store.connect()
        return self._connection

    def _flush(self) -> None:
        while self._pending:
            chunk = [self._pending.popleft() for _ in range(min(_BATCH * 4, len(self._pending)))]
            try:
                self._connected().insert([row for row, _ in chunk])
            except StoreError as exc:
                self._pending.extendleft(reversed(chunk))
                self._failed(exc)
                return
            finally:
                for _, done in chunk:  # written, or kept for a retry: the caller goes on either way
                    if done is not None:
                        done()
            self.written += len(chunk)
            self._recovered()
        if self._recounts:
            try:
                self._connected().executemany(
                    "update events set result = ? where request_id = ?",
                    [(result, request_id) for request_id, result in self._recounts.items()],
                )
            except StoreError as exc:
                self._failed(exc)
                return
            self._recounts.clear()
            self._recovered()

    def _failed(self, exc: Exception) -> None:
        if self._connection is not None:  # it may be broken (a server restarted): the retry opens another
            self._connection.close()
            self._connection = None
        overflow = len(self._pending) - self.max_buffer
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped += overflow
            if not self._full:
                logger.error(
                    "audit log: %d rows are waiting for %s; the oldest are dropped from now on (counted)",
                    self.max_buffer,
                    self.store.where,
                )
            self._full = True
        if not self._failing:
            logger.error(
                "audit log: writing to %s failed (%s); serving goes on, rows are kept (up to %d) and retried",
                self.store.where,
                exc,
                self.max_buffer,
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            logger.warning("audit log: writing works again; %d rows dropped meanwhile", self.dropped)
            self._failing = self._full = False

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything queued and stop the writer."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None


def open_for(
    settings: Any, *, source: str, detectors: Iterable[Detector] = (), instance: str | None = None
) -> AuditLog | None:
    """The gateway's audit log per `[audit]`: created, pruned, writer started; None when disabled.
    `instance` names the gateway on every row (see `store.instance_name`), else `source`."""
    if not settings.enabled:
        return None
    log = AuditLog(
        store_for(settings),
        redactor=Redactor(
            extra_keys=settings.redact_keys, extra_patterns=settings.redact_patterns, detectors=detectors
        ),
        max_buffer=settings.max_buffer,
        instance=instance_name(settings, instance or source),
        every_request=settings.durable == "all",
    )
    if settings.retention_days:
        with log.store.connect() as connection:  # the schema is in place: `AuditLog` prepared it
            removed = prune(connection, settings.retention_days)
        if removed:
            days = counted(settings.retention_days, "day")
            logger.info("audit log: pruned %s older than %s", counted(removed, "row"), days)
    log.start()
    log.event(Kind.CONFIG, name=source)
    return log


def _nothing() -> None:
    return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a request that stopped waiting (cancelled, timed out) has cancelled it
        future.set_result(None)
