"""Where audit rows live: the one interface the writer and the readers share, and SQLite's side of it.

Owns: `Store` (a database the rows go to: a SQLite file here, a PostgreSQL server in
`postgres`), `Connection` (what is done with one: rows inserted, statements run and rows
selected, each committed when it returns), `Dialect` (what differs between the two: the
placeholder, the substring test, which errors mean "not now"), `StoreError`, `store_for`, the
store `[audit]` configures, and `instance_name`, what names a gateway on the rows it writes.

Every statement is written once, in SQLite's spelling with `?` placeholders, by the module that
owns it (`log`, `queries`, `spend`); a `Connection` turns it into its database's. A database
that fails one statement raises `StoreError` (the writer keeps its rows and retries on a new
connection); one that cannot be used at all when the gateway starts is a `ConfigError`.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mcpgw.audit.schema import COLUMNS, ensure_schema, path_for
from mcpgw.config.env import expand
from mcpgw.errors import ConfigError, GatewayError

_INSERT_COLUMNS = tuple(COLUMNS)
_T = TypeVar("_T")


class StoreError(GatewayError):
    """One statement failed: the disk is full or locked, the server is gone. The writer keeps the
    rows and tries again on a new connection; a reader shows it as an error."""


@dataclass(frozen=True)
class Dialect:
    """What a statement written for SQLite needs to run on another database."""

    placeholder: str
    contains: str
    """`column contains ?`, with `{column}` for the column."""
    errors: tuple[type[BaseException], ...]
    """The database driver's errors: translated into `StoreError` at this one boundary."""
    insert_lock: str | None = None
    """Run in the same transaction before rows are inserted (PostgreSQL: ids in commit order)."""

    def sql(self, text: str) -> str:
        """`text` with this dialect's placeholders (our statements hold no `?` inside a literal)."""
        if self.placeholder == "?":
            return text
        return text.replace("%", "%%").replace("?", self.placeholder)


@functools.cache
def sqlite_dialect() -> Dialect:
    """SQLite's dialect. sqlite3 is imported with the first SQLite store used, not with this module:
    a gateway whose audit log is off (or on PostgreSQL) never loads it (about 1 MiB of RSS)."""
    import sqlite3

    return Dialect(placeholder="?", contains="instr({column}, ?) > 0", errors=(sqlite3.Error, OSError))


class Connection:
    """One DB-API connection with its dialect; every method commits (or rolls back) before it returns,
    so a long-lived reader (`logs --follow`) never holds a transaction open between polls."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def contains(self, column: str) -> str:
        return self.dialect.contains.format(column=column)

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            cursor = self.raw.cursor()
            cursor.execute(self.dialect.sql(sql), list(params))
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return self.transaction(run)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

        def run() -> int:
            cursor = self.raw.cursor()
            cursor.execute(self.dialect.sql(sql), list(params))
            return int(cursor.rowcount)

        return self.transaction(run)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        def run() -> None:
            self.raw.cursor().executemany(self.dialect.sql(sql), [list(p) for p in params])

        self.transaction(run)

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert `rows` (each the values of `schema.COLUMNS`, in that order) in one transaction: all
        or none."""
        marks = ", ".join("?" * len(_INSERT_COLUMNS))
        sql = self.dialect.sql(f"insert into events ({', '.join(_INSERT_COLUMNS)}) values ({marks})")

        def run() -> None:
            cursor = self.raw.cursor()
            if self.dialect.insert_lock:
                cursor.execute(self.dialect.insert_lock)
            cursor.executemany(sql, rows)

        self.transaction(run)

    def transaction(self, run: Callable[[], _T]) -> _T:
        """`run()` (which uses `raw`) in one transaction: committed, or rolled back and a `StoreError`."""
        try:
            result = run()
            self.raw.commit()
        except self.dialect.errors as exc:
            with contextlib.suppress(*self.dialect.errors):  # the connection may be gone: a new one is opened
                self.raw.rollback()
            raise StoreError(str(exc).strip() or type(exc).__name__) from exc
        return result

    def close(self) -> None:
        with contextlib.suppress(*self.dialect.errors):  # a broken connection: nothing is left to lose
            self.raw.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Store(ABC):
    """A database audit rows go to. `where` names it in messages (never with a password); `key` is
    the `[audit]` setting that chose it."""

    where: str
    key: str

    @abstractmethod
    def prepare(self) -> None:
        """Create or migrate the tables now: a `ConfigError` saying why when the database cannot be used."""

    @abstractmethod
    def connect(self) -> Connection:
        """A new connection for the writer or a reader (`StoreError` when there is none to be had)."""

    @abstractmethod
    def reading(self) -> Connection:
        """A connection for `mcpgw logs`/`stats`, the schema brought up to date; a `ConfigError` when
        there is nothing to read."""

    @property
    def path(self) -> Path | None:
        """The file, for a store that is one."""
        return None


class SqliteStore(Store):
    """A local SQLite file in WAL mode: the default."""

    key = "audit.path"

    def __init__(self, path: Path) -> None:
        self.file = path
        self.where = str(path)

    @property
    def path(self) -> Path:
        return self.file

    def prepare(self) -> None:
        failed: tuple[type[BaseException], ...] = (*sqlite_dialect().errors, StoreError)
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with self.connect() as connection:
                ensure_schema(connection.raw)
        except failed as exc:
            raise ConfigError(f"cannot open the audit database {self.file}: {exc}", key=self.key) from exc

    def connect(self) -> Connection:
        import sqlite3

        dialect = sqlite_dialect()
        try:
            raw = sqlite3.connect(str(self.file), timeout=1.0, check_same_thread=False)
            raw.execute("PRAGMA journal_mode=wal")
            # With WAL, NORMAL survives a crash of the process; only an OS crash can lose the last commits.
            raw.execute("PRAGMA synchronous=NORMAL")
        except dialect.errors as exc:
            raise StoreError(str(exc)) from exc
        return Connection(raw, dialect)

    def reading(self) -> Connection:
        import sqlite3

        if not self.file.exists():
            raise ConfigError(f"no audit database at {self.file} (has the gateway run?)", key=self.key)
        raw = sqlite3.connect(str(self.file))
        ensure_schema(raw)
        return Connection(raw, sqlite_dialect())


def store_for(settings: Any) -> Store:
    """The store `[audit]` names: PostgreSQL for `url`, else the SQLite file (`path_for`). The
    PostgreSQL driver is imported only here, only when it is used."""
    if getattr(settings, "url", None):
        from mcpgw.audit.postgres import PostgresStore

        return PostgresStore(expand(settings.url, key="audit.url"))
    return SqliteStore(path_for(settings))


def instance_name(settings: Any, default: str) -> str:
    """What names this gateway on its rows: `[audit] instance` (`${VAR}` expanded, e.g. `${HOSTNAME}`),
    else `default` (the registry file's path); on a shared database, prefixed with the host name,
    since replicas usually share the registry's path and a database server is shared to be written
    by several."""
    if getattr(settings, "instance", None):
        return expand(settings.instance, key="audit.instance")
    if getattr(settings, "url", None):
        return f"{socket.gethostname()}:{default}"
    return default


def connection(db: Any) -> Connection:
    """`db` as a `Connection`: one already, or a sqlite-utils `Database` (older callers, tests)."""
    if isinstance(db, Connection):
        return db
    return Connection(db.conn, sqlite_dialect())
