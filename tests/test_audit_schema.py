"""The SQLite audit file's shape: made in plain SQL (`audit.schema.ensure_schema`) as sqlite-utils
made it, so files written before and after are the same file; and the gateway writing it does not
load sqlite-utils (about 2 MiB of every serving gateway's memory, `bench/run.py --only rss`)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from conftest import modules_after
from mcpgw.audit.schema import COLUMNS, INDEXES, SCHEMA_VERSION, ensure_schema


def _shape(path: Path) -> dict[str, Any]:
    """What a reader can see of a file's schema: each table's columns, each index's columns."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = [row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")]
        columns = {t: conn.execute(f"pragma table_info([{t}])").fetchall() for t in sorted(tables)}
        indexes = {
            row[1]: [info[2] for info in conn.execute(f"pragma index_info([{row[1]}])")]
            for row in conn.execute("pragma index_list([events])")
        }
        meta = conn.execute("select key, value from meta").fetchall()
    return {"columns": columns, "indexes": indexes, "meta": meta}


def test_a_new_file_is_the_one_sqlite_utils_made(tmp_path: Path) -> None:
    before = sqlite_utils.Database(tmp_path / "before.db")  # what mcpgw's schema 4 did with sqlite-utils
    before["events"].create({"id": int, **COLUMNS}, pk="id")
    for columns in INDEXES:
        before["events"].create_index(columns, if_not_exists=True)
    before["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key", replace=True)
    before.conn.close()
    with sqlite3.connect(tmp_path / "now.db") as conn:
        ensure_schema(conn)
    conn.close()
    now = _shape(tmp_path / "now.db")
    assert now == _shape(tmp_path / "before.db")
    assert len(now["indexes"]) == len(INDEXES)


def test_opening_a_current_file_again_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with sqlite3.connect(db) as conn:
        ensure_schema(conn)
        conn.execute("insert into events (ts, kind) values ('2026-01-01T00:00:00+00:00', 'call')")
    conn.close()
    shape = _shape(db)
    ensure_schema(sqlite_utils.Database(db))  # the readers' and the tests' handle works too
    assert _shape(db) == shape
    with sqlite3.connect(db) as conn:
        assert conn.execute("select kind from events").fetchall() == [("call",)]
    conn.close()


def test_the_gateway_writing_its_audit_file_does_not_load_sqlite_utils(tmp_path: Path) -> None:
    script = (
        "from pathlib import Path\n"
        "from mcpgw.audit import AuditLog, Kind, Step\n"
        f"log = AuditLog(Path({str(tmp_path / 'audit.db')!r})).start()\n"
        "log.record_step(Step(kind=Kind.CALL, method='tools/call'))\n"
        "log.close()\n"
        "assert log.written == 1, log.written\n"
    )
    assert not {m for m in modules_after(script) if m.startswith("sqlite_utils")}
