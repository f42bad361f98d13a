"""The audit database: where it lives and the shape of its `events` table.

Owns: the file's default location, the table's columns and the indexes behind
the CLI's queries, and creating or migrating both. The writer (`log`) and the
readers (`queries`) both call `ensure_schema` on opening, so neither assumes a
shape the other did not make.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV_AUDIT_DB = "MCPGW_AUDIT_DB"
SCHEMA_VERSION = 4
"""2: `instance`, and a sampling row's `input_tokens`, `output_tokens` and `cost_usd` as columns.
3: `session` (rows of older files have none). 4: `parent`, a workflow step's workflow call."""
COLUMNS: dict[str, type] = {
    "ts": str,
    "instance": str,
    "request_id": str,
    "parent": str,
    "kind": str,
    "method": str,
    "persona": str,
    "principal": str,
    "session": str,
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
    "input_tokens": int,
    "output_tokens": int,
    "cost_usd": float,
}
INDEXES = [
    ["ts"],
    ["persona", "ts"],
    ["server", "ts"],
    ["name", "ts"],
    ["outcome", "ts"],
    ["request_id"],
    ["kind", "ts"],
    ["instance", "ts"],
    ["session", "id"],
    ["parent"],
]
SPEND_KEYS = ("input_tokens", "output_tokens", "cost_usd")
"""A sampling row's accounting (its `result` JSON) that is also stored as columns, to sum in SQL."""


def default_path() -> Path:
    if env := os.environ.get(ENV_AUDIT_DB):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mcpgw" / "audit.db"


def path_for(settings: Any) -> Path:
    return Path(settings.path).expanduser() if settings.path else default_path()


def ensure_schema(db: Any) -> None:
    """Create the tables and indexes, or add what an older file lacks."""
    events = db["events"]
    if not events.exists():
        events.create({"id": int, **COLUMNS}, pk="id")
    else:
        missing = {k: v for k, v in COLUMNS.items() if k not in events.columns_dict}
        for column, kind in missing.items():
            events.add_column(column, kind)
        if set(SPEND_KEYS) & set(missing):
            _backfill_spend(db)
    existing = {tuple(index.columns) for index in events.indexes}
    for columns in INDEXES:
        if tuple(columns) not in existing:
            events.create_index(columns, if_not_exists=True)
    db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key", replace=True)


def _backfill_spend(db: Any) -> None:
    """Schema 1 kept a sampling row's tokens and cost only inside its `result` JSON: copy them out,
    once, when the columns are added (a `result` that is not JSON leaves them empty)."""
    parts = ", ".join(f"{key} = json_extract(result, '$.{key}')" for key in SPEND_KEYS)
    with db.conn:
        db.conn.execute(f"update events set {parts} where kind = 'sampling' and json_valid(result)")
