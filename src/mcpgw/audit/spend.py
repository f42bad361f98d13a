"""Sampling spend read back from the audit log.

Owns every query on the `events` table's `sampling` rows: the spend per persona
and per route that `mcpgw stats` shows, and what one persona spent since a
time, which per-persona budgets start from so that they survive a restart.
The rows themselves are written by sampling; the log stores their accounting both
as JSON in `result` and as the columns `input_tokens`, `output_tokens` and
`cost_usd` (schema 2; `schema` copies them out of older rows), which are summed here,
on whichever store the log is in (`store`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mcpgw.audit.store import SqliteStore, Store, StoreError, connection

logger = logging.getLogger("mcpgw.audit")


_SPENT = "coalesce(input_tokens, 0) + coalesce(output_tokens, 0) as tokens, coalesce(cost_usd, 0) as usd"


def summary(db: Any, *, since: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Sampling requests, tokens and cost per persona and per route (`db`: a `store.Connection`)."""
    sql = f"select persona, name, outcome, {_SPENT} from events where kind = 'sampling'"
    rows = connection(db).select(sql + (" and ts >= ?" if since else ""), [since] if since else [])
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


def spent_by(where: Path | Store, persona: str, *, since: str) -> tuple[float, float]:
    """The tokens and dollars `persona`'s sampling requests cost since `since` (0, 0 without a log).

    A connection of its own with a short timeout: this runs on a sampling request's path, while
    the audit writer may hold the database.
    """
    store = where if isinstance(where, Store) else SqliteStore(where)
    if store.path is not None and not store.path.exists():
        return 0.0, 0.0
    try:
        with store.connect() as db:
            (row,) = db.select(
                "select coalesce(sum(tokens), 0) as tokens, coalesce(sum(usd), 0) as usd from "
                f"(select {_SPENT} from events where kind = 'sampling' and persona = ? and ts >= ?) as spent",
                [persona, since],
            )
    except StoreError as exc:
        logger.warning("sampling: cannot read today's spend from the audit log: %s", exc)
        return 0.0, 0.0
    return float(row["tokens"]), float(row["usd"])
