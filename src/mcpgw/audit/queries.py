"""Reading the audit log: the queries behind `mcpgw logs` and `mcpgw stats`, and pruning.

Owns: opening the store for the CLI (a clear error when there is none or it cannot be reached),
filtering rows, the per-group summaries (calls, errors, p50/p95 latency),
deleting rows past their retention, and `printable`: a row as it may be shown on
a terminal, whatever wrote it. Each query is written once and runs on either store
(`store.Connection`); `db` may also be a sqlite-utils `Database`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mcpgw.audit.fields import LIMITS, shown
from mcpgw.audit.step import STAT_KINDS, Outcome
from mcpgw.audit.store import Connection, SqliteStore, Store, connection


def open_for_reading(where: Path | Store) -> Connection:
    """A connection to read the log at `where` (a SQLite file, or `store.store_for(settings)`)."""
    return (where if isinstance(where, Store) else SqliteStore(where)).reading()


def query(
    db: Any,
    *,
    persona: str | None = None,
    server: str | None = None,
    tool: str | None = None,
    kind: str | None = None,
    instance: str | None = None,
    outcome: Outcome | None = None,
    principal: str | None = None,
    session: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after_id: int | None = None,
    limit: int = 50,
    newest_first: bool = True,
) -> list[dict[str, Any]]:
    """Rows matching every filter given. `since` and `until` are instants shaped like `ts` (see
    `times.parse`): `since` is inclusive, `until` exclusive."""
    reader = connection(db)
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("persona", persona),
        ("server", server),
        ("name", tool),
        ("kind", kind),
        ("instance", instance),
        ("session", session),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if outcome is not None:
        where.append("outcome = ?")
        params.append(Outcome(outcome).value)
    if principal is not None:  # a substring: `alice` finds `sub=alice client_id=cli-1`
        where.append(reader.contains("principal"))
        params.append(principal)
    if since:
        where.append("ts >= ?")
        params.append(since)
    if until:
        where.append("ts < ?")
        params.append(until)
    if after_id is not None:
        where.append("id > ?")
        params.append(after_id)
    sql = "select * from events" + (" where " + " and ".join(where) if where else "")
    sql += f" order by id {'desc' if newest_first else 'asc'} limit ?"
    params.append(limit)
    return reader.select(sql, params)


def printable(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every text value escaped and bounded as the writer stores it, for display.

    Rows this mcpgw writes are already so; rows of an older version (or put in the file by
    anything else) may hold escape sequences that would drive the terminal, or megabytes.
    """
    return {
        column: shown(value, LIMITS.get(column, LIMITS["error"])) if isinstance(value, str) else value
        for column, value in row.items()
    }


STAT_GROUPS = ("persona", "server", "name", "principal", "instance")
"""What `stats` groups by; `name` is the tool, resource or prompt."""


def stats(db: Any, *, since: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Calls, errors, p50 and p95 latency per persona, server, tool, principal and instance (request steps
    only)."""
    kinds = ", ".join(f"'{kind.value}'" for kind in STAT_KINDS)
    sql = f"select {', '.join(STAT_GROUPS)}, outcome, latency_ms from events where kind in ({kinds})"
    rows = connection(db).select(sql + (" and ts >= ?" if since else ""), [since] if since else [])
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

    errors = sum(1 for r in rows if r["outcome"] != Outcome.OK)
    return {"key": key, "calls": len(rows), "errors": errors, "p50_ms": pct(0.5), "p95_ms": pct(0.95)}


def prune(db: Any, days: float) -> int:
    """Delete the rows older than `days` (0: every row); the number deleted."""
    if not days >= 0:  # also NaN
        raise ValueError(f"cannot prune rows older than {days} days")
    cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    return connection(db).execute("delete from events where ts < ?", [cutoff])
