"""Sampling spend read back from the audit log.

Owns every query on the `events` table's `sampling` rows: the spend per persona
and per route that `mcpgw stats` shows, and what one persona spent since a
time, which per-persona budgets start from so that they survive a restart.
The rows themselves are written by sampling; the log stores their accounting both
as JSON in `result` and as the columns `input_tokens`, `output_tokens` and
`cost_usd` (schema 2; `schema` copies them out of older rows), which are summed here.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

logger = logging.getLogger("mcpgw.audit")


_SPENT = "coalesce(input_tokens, 0) + coalesce(output_tokens, 0) as tokens, coalesce(cost_usd, 0) as usd"


def summary(db: Any, *, since: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Sampling requests, tokens and cost per persona and per route (`db`: a sqlite-utils Database)."""
    sql = f"select persona, name, outcome, {_SPENT} from events where kind = 'sampling'"
    rows = list(db.query(sql + (" and ts >= ?" if since else ""), [since] if since else []))
    out: dict[str, list[dict[str, Any]]] = {}
    for group, column in (("persona", "persona"), ("route", "name")):
        buckets: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = str(row[column] or "-")
            bucket = buckets.setdefault(
                key, {"key": key, "requests": 0, "errors": 0, "tokens": 0, "cost_usd": 0.0}
            )
            bucket["requests"] += 1
            bucket["errors"] += row["outcome"] != "ok"
            bucket["tokens"] += int(row["tokens"])
            bucket["cost_usd"] = round(bucket["cost_usd"] + float(row["usd"]), 8)
        out[group] = [buckets[k] for k in sorted(buckets)]
    return out


def spent_by(path: Path, persona: str, *, since: str) -> tuple[float, float]:
    """The tokens and dollars `persona`'s sampling requests cost since `since` (0, 0 without a log).

    Opened with plain sqlite3 and a short timeout: this runs on a sampling request's path,
    while the audit writer may hold the database.
    """
    if not path.exists():
        return 0.0, 0.0
    try:
        with contextlib.closing(sqlite3.connect(str(path), timeout=1.0)) as db:
            tokens, usd = db.execute(
                f"select coalesce(sum(tokens), 0), coalesce(sum(usd), 0) from (select {_SPENT} from events "
                "where kind = 'sampling' and persona = ? and ts >= ?)",
                [persona, since],
            ).fetchone()
    except sqlite3.Error as exc:
        logger.warning("sampling: cannot read today's spend from the audit log: %s", exc)
        return 0.0, 0.0
    return float(tokens), float(usd)
