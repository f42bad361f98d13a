"""The audit log: every step to SQLite through sqlite-utils, written off the hot path.

Owns: the `events` table (created and migrated here, indexed for the CLI's
queries), the one writer thread that inserts rows in batches with WAL on,
the bounded retry buffer that keeps rows when the disk fails (and counts what
it had to drop), flushing on shutdown, the per-request `Step` that request
handling fills in, and the queries behind `mcpgw logs` and `mcpgw stats`.

A request only appends a dict to a queue; it never waits on the disk.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mcpgw.audit.redact import Redactor
from mcpgw.detectors import Detector
from mcpgw.errors import ConfigError

logger = logging.getLogger("mcpgw.audit")

ENV_AUDIT_DB = "MCPGW_AUDIT_DB"
SCHEMA_VERSION = 1
COLUMNS: dict[str, type] = {
    "ts": str,
    "request_id": str,
    "kind": str,
    "method": str,
    "persona": str,
    "principal": str,
    "client": str,
    "protocol": str,
    "server": str,
    "name": str,
    "outcome": str,
    "error": str,
    "latency_ms": float,
    "arg_bytes": int,
    "result_bytes": int,
    "arguments": str,
    "result": str,
    "findings": str,
}
INDEXES = [["ts"], ["persona", "ts"], ["server", "ts"], ["name", "ts"], ["outcome", "ts"], ["request_id"]]
SUMMARY_CHARS = 300
_BATCH = 500
_INTERVAL = 0.05


def default_path() -> Path:
    if env := os.environ.get(ENV_AUDIT_DB):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mcpgw" / "audit.db"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Step:
    """What one downstream request did; filled in as it is served, recorded once at the end."""

    kind: str
    method: str
    persona: str | None = None
    client: str | None = None
    protocol: str | None = None
    principal: str | None = None
    """Who the bearer token says called (`sub=... client_id=...`), over HTTP with `[auth]`."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    server: str | None = None
    name: str | None = None
    outcome: str = "ok"
    error: str | None = None
    arguments: Any = None
    result: Any = None
    findings: str | None = None
    """What data rules found (detector names and counts, never values)."""
    started: float = field(default_factory=time.perf_counter)
    ts: str = field(default_factory=lambda: now())
    latency_ms: float = 0.0


_current: contextvars.ContextVar[Step | None] = contextvars.ContextVar("mcpgw_step", default=None)


def current() -> Step | None:
    return _current.get()


def note(**values: Any) -> None:
    """Fill in the current request's step (no-op outside one)."""
    step = _current.get()
    if step is not None:
        for key, value in values.items():
            setattr(step, key, value)


class AuditLog:
    """Queue plus one writer thread. `record` never blocks; `close` flushes."""

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

    def record(self, row: dict[str, Any]) -> None:
        self._queue.put(row)

    def record_step(self, step: Step) -> None:
        """Queue a finished step; turning it into a redacted row happens on the writer thread."""
        step.latency_ms = (time.perf_counter() - step.started) * 1000
        self._queue.put(step)

    def _row(self, step: Step) -> dict[str, Any]:
        secrets = self.redactor.secret_values(step.arguments) if step.arguments is not None else []
        arguments = _dump(self.redactor.value(step.arguments)) if step.arguments is not None else None
        result = _dump(step.result)[: SUMMARY_CHARS * 4] if step.result is not None else None
        return {
            "ts": step.ts,
            "request_id": step.request_id,
            "kind": step.kind,
            "method": step.method,
            "persona": step.persona,
            "principal": step.principal,
            "client": step.client,
            "protocol": step.protocol,
            "server": step.server,
            "name": step.name,
            "outcome": step.outcome,
            "error": self.redactor.text(step.error, secrets)[:2000] if step.error else None,
            "latency_ms": round(step.latency_ms, 3),
            "arg_bytes": len(arguments.encode()) if arguments else 0,
            "result_bytes": len(result.encode()) if result else 0,
            "arguments": arguments[:4000] if arguments else None,
            "result": self.redactor.text(result, secrets)[:SUMMARY_CHARS] if result else None,
            "findings": step.findings,
        }

    def event(
        self,
        kind: str,
        *,
        server: str | None = None,
        name: str | None = None,
        outcome: str = "ok",
        error: str | None = None,
    ) -> None:
        """A step that is not a client request: upstream state changes, configuration loads."""
        self.record(
            {
                "ts": now(),
                "request_id": uuid.uuid4().hex,
                "kind": kind,
                "method": None,
                "persona": None,
                "principal": None,
                "client": None,
                "protocol": None,
                "server": server,
                "name": name,
                "outcome": outcome,
                "error": self.redactor.text(error) if error else None,
                "latency_ms": None,
                "arg_bytes": 0,
                "result_bytes": 0,
                "arguments": None,
                "result": None,
                "findings": None,
            }
        )

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
    log.event("config", name=source)
    return log


def path_for(settings: Any) -> Path:
    return Path(settings.path).expanduser() if settings.path else default_path()


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def ensure_schema(db: Any) -> None:
    """Create the tables and indexes, or add what an older file lacks."""
    events = db["events"]
    if not events.exists():
        events.create({"id": int, **COLUMNS}, pk="id")
    else:
        missing = {k: v for k, v in COLUMNS.items() if k not in events.columns_dict}
        for column, kind in missing.items():
            events.add_column(column, kind)
    existing = {tuple(index.columns) for index in events.indexes}
    for columns in INDEXES:
        if tuple(columns) not in existing:
            events.create_index(columns, if_not_exists=True)
    db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key", replace=True)


# --- reading (the CLI) ----------------------------------------------------------------------------


def open_for_reading(path: Path) -> Any:
    import sqlite_utils

    if not path.exists():
        raise ConfigError(f"no audit database at {path} (has the gateway run?)", key="audit.path")
    db = sqlite_utils.Database(path)
    ensure_schema(db)
    return db


def query(
    db: Any,
    *,
    persona: str | None = None,
    server: str | None = None,
    tool: str | None = None,
    outcome: str | None = None,
    principal: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after_id: int | None = None,
    limit: int = 50,
    newest_first: bool = True,
) -> list[dict[str, Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("persona", persona), ("server", server), ("name", tool), ("outcome", outcome)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if principal is not None:  # a substring: `alice` finds `sub=alice client_id=cli-1`
        where.append("instr(principal, ?) > 0")
        params.append(principal)
    if since:
        where.append("ts >= ?")
        params.append(since)
    if until:
        where.append("ts <= ?")
        params.append(until)
    if after_id is not None:
        where.append("id > ?")
        params.append(after_id)
    sql = "select * from events" + (" where " + " and ".join(where) if where else "")
    sql += f" order by id {'desc' if newest_first else 'asc'} limit ?"
    params.append(limit)
    return list(db.query(sql, params))


STAT_GROUPS = ("persona", "server", "name", "principal")
"""What `stats` groups by; `name` is the tool, resource or prompt."""


def stats(db: Any, *, since: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Calls, errors, p50 and p95 latency per persona, server, tool and principal (request steps only)."""
    rows = list(
        db.query(
            "select persona, server, name, principal, outcome, latency_ms from events where kind in "
            "('call', 'read', 'prompt', 'complete', 'list')" + (" and ts >= ?" if since else ""),
            [since] if since else [],
        )
    )
    result: dict[str, list[dict[str, Any]]] = {}
    for group in STAT_GROUPS:
        buckets: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            buckets.setdefault(str(row[group] or "-"), []).append(row)
        result[group] = [_summary(key, bucket) for key, bucket in sorted(buckets.items())]
    return result


def _summary(key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(r["latency_ms"] for r in rows if r["latency_ms"] is not None)

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(float(latencies[min(len(latencies) - 1, int(p * len(latencies)))]), 2)

    errors = sum(1 for r in rows if r["outcome"] != "ok")
    return {"key": key, "calls": len(rows), "errors": errors, "p50_ms": pct(0.5), "p95_ms": pct(0.95)}


def prune(db: Any, days: float) -> int:
    cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    before = db["events"].count
    db.execute("delete from events where ts < ?", [cutoff])
    db.conn.commit()
    return int(before - db["events"].count)
