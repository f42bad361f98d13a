"""The audit log's writer: every row to SQLite through sqlite-utils, off the hot path.

Owns: turning steps and events into rows of the `events` table (redacted and
bounded here, nowhere else), the one writer thread that inserts them in batches
with WAL on, the bounded retry buffer that keeps rows when the disk fails (and
counts what it had to drop), flushing on shutdown, and opening the log `[audit]`
configures.

A request only appends to a queue; it never waits on the disk.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mcpgw.audit.queries import prune
from mcpgw.audit.redact import Redactor
from mcpgw.audit.schema import ensure_schema, path_for
from mcpgw.audit.step import Kind, Outcome, Step, now
from mcpgw.detectors import Detector
from mcpgw.errors import ConfigError

logger = logging.getLogger("mcpgw.audit")

SUMMARY_CHARS = 300
ERROR_CHARS = 2000
_BATCH = 500
_INTERVAL = 0.05


class AuditLog:
    """Queue plus one writer thread. `record_step` and `event` never block; `close` flushes."""

    def __init__(self, path: Path, *, redactor: Redactor | None = None, max_buffer: int = 100_000) -> None:
        self.path = path
        self.redactor = redactor or Redactor()
        self.max_buffer = max_buffer
        self.dropped = 0
        self.written = 0
        self._queue: queue.SimpleQueue[dict[str, Any] | Step | None] = queue.SimpleQueue()
        self._pending: deque[dict[str, Any]] = deque()
        self._failing = False
        self._thread: threading.Thread | None = None
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

    def start(self) -> AuditLog:
        self._thread = threading.Thread(target=self._run, name="mcpgw-audit", daemon=True)
        self._thread.start()
        return self

    # --- the hot path ----------------------------------------------------------------------------

    def record_step(self, step: Step) -> None:
        """Queue a finished step; turning it into a redacted row happens on the writer thread."""
        step.latency_ms = (time.perf_counter() - step.started) * 1000
        self._queue.put(step)

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
        as JSON as is."""
        self._queue.put(
            {
                "ts": now(),
                "request_id": request_id or uuid.uuid4().hex,
                "kind": Kind(kind).value,
                "method": method,
                "persona": persona,
                "principal": None,
                "client": None,
                "protocol": None,
                "server": server,
                "name": name,
                "outcome": Outcome(outcome).value,
                "error": self.redactor.text(error)[:ERROR_CHARS] if error else None,
                "latency_ms": None if latency_ms is None else round(latency_ms, 3),
                "arg_bytes": 0,
                "result_bytes": 0,
                "arguments": None,
                "result": json.dumps(dict(result)) if result is not None else None,
                "findings": None,
            }
        )

    def _row(self, step: Step) -> dict[str, Any]:
        secrets = self.redactor.secret_values(step.arguments) if step.arguments is not None else []
        arguments = _dump(self.redactor.value(step.arguments)) if step.arguments is not None else None
        result = _dump(step.result)[: SUMMARY_CHARS * 4] if step.result is not None else None
        return {
            "ts": step.ts,
            "request_id": step.request_id,
            "kind": step.kind.value,
            "method": step.method,
            "persona": step.persona,
            "principal": step.principal,
            "client": step.client,
            "protocol": step.protocol,
            "server": step.server,
            "name": step.name,
            "outcome": step.outcome.value,
            "error": self.redactor.text(step.error, secrets)[:ERROR_CHARS] if step.error else None,
            "latency_ms": round(step.latency_ms, 3),
            "arg_bytes": len(arguments.encode()) if arguments else 0,
            "result_bytes": len(result.encode()) if result else 0,
            "arguments": arguments[:4000] if arguments else None,
            "result": self.redactor.text(result, secrets)[:SUMMARY_CHARS] if result else None,
            "findings": step.findings,
        }

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

    def _take(self) -> tuple[list[dict[str, Any]], bool]:
        """Wait for a row, then let more gather for a moment: one commit per interval, not per call."""
        batch: list[dict[str, Any]] = []
        try:
            item = self._queue.get(timeout=1.0)
        except queue.Empty:
            return batch, False
        if item is not None:
            time.sleep(_INTERVAL if not self._failing else 1.0)
        while True:
            if item is None:
                return batch, True
            batch.append(self._row(item) if isinstance(item, Step) else item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _flush(self, db: Any) -> None:
        while self._pending:
            rows = [self._pending.popleft() for _ in range(min(_BATCH * 4, len(self._pending)))]
            try:
                db["events"].insert_all(rows)
            except (sqlite3.Error, OSError) as exc:
                self._pending.extendleft(reversed(rows))
                overflow = len(self._pending) - self.max_buffer
                if overflow > 0:
                    for _ in range(overflow):
                        self._pending.popleft()
                    self.dropped += overflow
                if not self._failing:
                    logger.error(
                        "audit log: writing to %s failed (%s); serving goes on, rows are kept "
                        "(up to %d) and retried",
                        self.path,
                        exc,
                        self.max_buffer,
                    )
                self._failing = True
                return
            self.written += len(rows)
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


def open_for(settings: Any, *, source: str, detectors: Iterable[Detector] = ()) -> AuditLog | None:
    """The gateway's audit log per `[audit]`: created, pruned, writer started; None when disabled."""
    if not settings.enabled:
        return None
    path = path_for(settings)
    log = AuditLog(
        path,
        redactor=Redactor(
            extra_keys=settings.redact_keys, extra_patterns=settings.redact_patterns, detectors=detectors
        ),
        max_buffer=settings.max_buffer,
    )
    if settings.retention_days:
        import sqlite_utils

        removed = prune(sqlite_utils.Database(path), settings.retention_days)
        if removed:
            logger.info("audit log: pruned %d rows older than %g days", removed, settings.retention_days)
    log.start()
    log.event(Kind.CONFIG, name=source)
    return log


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)
