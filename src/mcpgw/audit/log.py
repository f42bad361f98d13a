"""The audit log's writer: every row to SQLite through sqlite-utils, off the hot path.

Owns: turning steps and events into rows of the `events` table (redacted, escaped
and bounded here, through `fields.stored`, nowhere else), the one writer thread
that inserts them in batches with WAL on, which rows are written before the
request is answered (`durable`), the count updates of folded refusals
(`recount`), the bounded retry buffer that keeps rows when the disk fails (and
counts what it had to drop), flushing on shutdown, and opening the log
`[audit]` configures.

An ordinary request only appends to a queue; it never waits on the disk, so a
crash (`kill -9`) loses at most the rows of the last batch interval
(`BATCH_INTERVAL`). A refusal or a security event is different: its caller
waits (at most `DURABLE_WAIT`, and not while the disk is failing) until the
writer has committed it, so what was refused or withheld is on disk before the
client hears of it.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from mcpgw.audit.fields import (
    ARGUMENTS_CHARS,
    ERROR_CHARS,
    EVENT_RESULT_CHARS,
    FIELD_CHARS,
    SCAN_CHARS,
    SUMMARY_CHARS,
    shown,
    stored,
)
from mcpgw.audit.queries import prune
from mcpgw.audit.redact import Redactor
from mcpgw.audit.schema import SPEND_KEYS, ensure_schema, path_for
from mcpgw.audit.step import Kind, Outcome, Step, new_request_id, now
from mcpgw.detectors import Detector
from mcpgw.errors import ConfigError

logger = logging.getLogger("mcpgw.audit")

_BATCH = 500
_COMMIT_WAITERS = 8
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
_Pending = tuple[dict[str, Any], threading.Event | None]


class AuditLog:
    """Queue plus one writer thread. Ordinary rows never block their caller; `close` flushes."""

    def __init__(
        self,
        path: Path,
        *,
        redactor: Redactor | None = None,
        max_buffer: int = 100_000,
        instance: str | None = None,
    ) -> None:
        self.path = path
        self.instance = instance
        """Written on every row: which gateway wrote it, when several share one database."""
        self.redactor = redactor or Redactor()
        self.max_buffer = max_buffer
        self.dropped = 0
        self.written = 0
        self._queue: queue.SimpleQueue[tuple[_Item, threading.Event | None] | None] = queue.SimpleQueue()
        self._pending: deque[_Pending] = deque()
        self._recounts: dict[str, str] = {}
        """Count updates of folded refusals, applied once every row before them is written."""
        self._urgent = threading.Event()
        """Set when a durable row is queued: the writer commits at once instead of gathering a batch."""
        self._failing = False
        self._thread: threading.Thread | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        """Threads that wait for `commit`s, so a burst of refusals cannot take every worker thread."""
        self._prepare()

    # --- set-up ----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create (or migrate) the database now, so a bad path is a clear error at start."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._open()
            ensure_schema(db)
            db.conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the audit database {self.path}: {exc}", key="audit.path") from exc

    def _open(self) -> Any:
        import sqlite_utils

        db = sqlite_utils.Database(sqlite3.connect(str(self.path), timeout=1.0, check_same_thread=False))
        db.enable_wal()
        # With WAL, NORMAL survives a crash of the process; only an OS crash can lose the last commits.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

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
        self._wait(self._put(step, durable=durable(step.kind, step.outcome)))

    async def commit(self, step: Step) -> None:
        """Record `step` and wait until it is on disk, without holding up the event loop meanwhile
        (at most `DURABLE_WAIT`; not at all while the disk is failing)."""
        step.latency_ms = (time.perf_counter() - step.started) * 1000
        done = self._put(step, durable=True)  # queued now: whatever is queued after lands after it
        if done is not None:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(_COMMIT_WAITERS)
            await anyio.to_thread.run_sync(self._wait, done, limiter=self._limiter)

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
            "result": self._accounting(result) if result is not None else None,  # a copy, cleaned now
            "findings": None,
            **_spend(kind, result),
        }
        self._wait(self._put(row, durable=durable(kind, outcome)))

    def recount(self, request_id: str, result: Mapping[str, Any]) -> None:
        """Replace the `result` of the row `request_id` (a folded refusal's running count), soon."""
        self._queue.put((_Recount(request_id, json.dumps(self._accounting(result))), None))

    def _put(self, item: _Item, *, durable: bool) -> threading.Event | None:
        """Queue `item`; for a durable one (with a writer running and the disk not failing), the
        event the writer sets once it is committed."""
        if not durable or self._thread is None or self._failing:
            self._queue.put((item, None))
            return None
        done = threading.Event()
        self._queue.put((item, done))
        self._urgent.set()
        return done

    def _wait(self, done: threading.Event | None) -> None:
        if done is not None and not done.wait(DURABLE_WAIT):
            logger.warning("audit log: a refusal or security row waited over %gs for the disk", DURABLE_WAIT)

    # --- rows ------------------------------------------------------------------------------------

    def _text(self, row: dict[str, Any], literals: Iterable[str] = ()) -> dict[str, Any]:
        """Every text column of `row` redacted, escaped and bounded (arguments and result aside)."""
        # The gateway's own id, which rows are joined on: never redacted (a run of hex digits can
        # pass for a card number), only bounded.
        row["request_id"] = shown(row["request_id"], FIELD_CHARS)
        row["parent"] = shown(row["parent"], FIELD_CHARS) if row["parent"] is not None else None
        row["instance"] = stored(self.instance, FIELD_CHARS, self.redactor)
        for column in (
            "method",
            "persona",
            "principal",
            "session",
            "client",
            "protocol",
            "server",
            "name",
            "findings",
        ):
            row[column] = stored(row[column], FIELD_CHARS, self.redactor)
        # What an upstream says may echo a secret argument back: those values go wherever they appear.
        row["error"] = stored(row["error"], ERROR_CHARS, self.redactor, literals=literals)
        return row

    def _accounting(self, value: Any) -> Any:
        """An event's result with its strings cleaned; still JSON (sampling spend is read back from it)."""
        if isinstance(value, Mapping):
            return {str(k)[:FIELD_CHARS]: self._accounting(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._accounting(v) for v in value[:100]]
        if isinstance(value, str):
            return stored(value, FIELD_CHARS, self.redactor)
        return value

    def _event_row(self, row: dict[str, Any]) -> dict[str, Any]:
        row = self._text(row)
        if row["result"] is not None:
            text = json.dumps(row["result"], ensure_ascii=False, default=str)
            if len(text) > EVENT_RESULT_CHARS:  # still JSON: its numbers, not its strings
                numbers = {k: v for k, v in row["result"].items() if isinstance(v, int | float)}
                text = json.dumps({**numbers, "cut": len(text)})
            row["result"] = text
        return row

    def _row(self, step: Step) -> dict[str, Any]:
        secrets = self.redactor.secret_values(step.arguments) if step.arguments is not None else []
        arguments = _dump(self.redactor.value(step.arguments)) if step.arguments is not None else None
        result = _dump(step.result)[: SUMMARY_CHARS * 4] if step.result is not None else None
        row = {
            "ts": step.ts,
            "request_id": step.request_id,
            "parent": step.parent,
            "kind": step.kind.value,
            "method": step.method,
            "persona": step.persona,
            "principal": step.principal,
            "session": step.session,
            "client": step.client,
            "protocol": step.protocol,
            "server": step.server,
            "name": step.name,
            "outcome": step.outcome.value,
            "error": step.error,
            "latency_ms": round(step.latency_ms, 3),
            "arg_bytes": len(arguments.encode()) if arguments else 0,
            "result_bytes": len(result.encode()) if result else 0,
            # The arguments were redacted value by value above; here they are only escaped and bounded.
            "arguments": shown(arguments[:SCAN_CHARS], ARGUMENTS_CHARS, length=len(arguments))
            if arguments
            else None,
            "result": stored(result, SUMMARY_CHARS, self.redactor, literals=secrets) if result else None,
            "findings": step.findings,
            **dict.fromkeys(SPEND_KEYS),
        }
        return self._text(row, secrets)

    # --- the writer ------------------------------------------------------------------------------

    def _run(self) -> None:
        db = self._open()
        try:
            stop = False
            while not stop:
                batch, stop = self._take()
                self._pending.extend(batch)
                self._flush(db)
        finally:
            self._flush(db)
            if self._pending:
                logger.error("audit log: %d rows could not be written at shutdown", len(self._pending))
            if self.dropped:
                logger.error(
                    "audit log: %d rows were dropped in all (buffer full while the disk failed)", self.dropped
                )
            db.conn.close()

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
                batch.append((self._row(item) if isinstance(item, Step) else self._event_row(item), done))
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _flush(self, db: Any) -> None:
        while self._pending:
            chunk = [self._pending.popleft() for _ in range(min(_BATCH * 4, len(self._pending)))]
            try:
                db["events"].insert_all([row for row, _ in chunk])
            except (sqlite3.Error, OSError) as exc:
                self._pending.extendleft(reversed(chunk))
                self._failed(exc)
                return
            finally:
                for _, done in chunk:  # written, or kept for a retry: the caller goes on either way
                    if done is not None:
                        done.set()
            self.written += len(chunk)
            self._recovered()
        if self._recounts:
            try:
                with db.conn:
                    db.conn.executemany(
                        "update events set result = ? where request_id = ?",
                        [(result, request_id) for request_id, result in self._recounts.items()],
                    )
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                return
            self._recounts.clear()
            self._recovered()

    def _failed(self, exc: Exception) -> None:
        overflow = len(self._pending) - self.max_buffer
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped += overflow
        if not self._failing:
            logger.error(
                "audit log: writing to %s failed (%s); serving goes on, rows are kept (up to %d) and retried",
                self.path,
                exc,
                self.max_buffer,
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            logger.warning("audit log: writing works again; %d rows dropped meanwhile", self.dropped)
            self._failing = False

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
    `instance` names the gateway on every row: `[audit] instance`, else this argument, else `source`."""
    if not settings.enabled:
        return None
    path = path_for(settings)
    log = AuditLog(
        path,
        redactor=Redactor(
            extra_keys=settings.redact_keys, extra_patterns=settings.redact_patterns, detectors=detectors
        ),
        max_buffer=settings.max_buffer,
        instance=settings.instance or instance or source,
    )
    if settings.retention_days:
        import sqlite_utils

        removed = prune(sqlite_utils.Database(path), settings.retention_days)
        if removed:
            logger.info("audit log: pruned %d rows older than %g days", removed, settings.retention_days)
    log.start()
    log.event(Kind.CONFIG, name=source)
    return log


def _spend(kind: Kind, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """A sampling (or draft) row's tokens and cost as columns (also kept in its `result`); numbers only."""
    values: dict[str, Any] = dict.fromkeys(SPEND_KEYS)
    if kind in (Kind.SAMPLING, Kind.DRAFT) and result is not None:
        for key, cast in (("input_tokens", int), ("output_tokens", int), ("cost_usd", float)):
            value = result.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[key] = cast(value)
    return values


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)
