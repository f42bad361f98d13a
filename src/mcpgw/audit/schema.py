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


_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}
"""Column types as sqlite-utils 4 writes them, so a file either made is the same file."""


def ensure_schema(db: Any) -> None:
    """Create the tables and indexes, or add what an older file lacks (`db`: a `sqlite3` connection,
    or a `sqlite_utils.Database`).

    Plain SQL, as the PostgreSQL store's, making what sqlite-utils made (the same table, column
    types and index names): importing sqlite-utils kept about 2 MiB resident in every serving
    gateway (of an 80 MiB budget) for these few statements at start. Its CLI stays for users."""
    conn = getattr(db, "conn", db)
    with conn:
        columns = {row[1] for row in conn.execute("pragma table_info([events])")}
        if not columns:
            conn.execute(
                "create table [events] ([id] INTEGER PRIMARY KEY, "
                + ", ".join(f"[{name}] {_SQL_TYPES[kind]}" for name, kind in COLUMNS.items())
                + ")"
            )
        missing = [name for name in COLUMNS if columns and name not in columns]
        for name in missing:
            conn.execute(f"alter table [events] add column [{name}] {_SQL_TYPES[COLUMNS[name]]}")
        if set(SPEND_KEYS) & set(missing):
            _backfill_spend(conn)
        indexed = set()
        for index in conn.execute("pragma index_list([events])").fetchall():
            indexed.add(tuple(row[2] for row in conn.execute(f"pragma index_info([{index[1]}])")))
        for index_columns in INDEXES:
            if tuple(index_columns) not in indexed:
                conn.execute(index_statement(index_columns))
        for statement in META_STATEMENTS:
            conn.execute(statement, (str(SCHEMA_VERSION),) if "?" in statement else ())


def index_statement(columns: list[str]) -> str:
    """One of `INDEXES`, as both stores make it (named as sqlite-utils names it)."""
    return f"create index if not exists idx_events_{'_'.join(columns)} on events ({', '.join(columns)})"


META_STATEMENTS = (
    "create table if not exists meta (key TEXT PRIMARY KEY, value TEXT)",
    "insert into meta (key, value) values ('schema_version', ?) "
    "on conflict (key) do update set value = excluded.value",
)
"""The `meta` table and the schema version in it, in the SQL both stores speak (its one parameter:
`SCHEMA_VERSION`)."""


def _backfill_spend(conn: Any) -> None:
    """Schema 1 kept a sampling row's tokens and cost only inside its `result` JSON: copy them out,
    once, when the columns are added (a `result` that is not JSON leaves them empty)."""
    parts = ", ".join(f"{key} = json_extract(result, '$.{key}')" for key in SPEND_KEYS)
    conn.execute(f"update events set {parts} where kind = 'sampling' and json_valid(result)")
