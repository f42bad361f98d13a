"""The audit log on PostgreSQL (`[audit] url = "postgresql://..."`): one table for several gateways.

Owns: connecting with psycopg 3 (imported only by this module, which `store.store_for` imports
only for a `url`, so a gateway on SQLite never loads the driver); the `events` and `meta`
tables made from `schema.COLUMNS` and `schema.INDEXES` (created on first use, missing columns
added, one gateway at a time); ids in commit order across writers; and the messages for a URL
that cannot be used (malformed, server unreachable, credentials refused), with the URL shown
without its password.

Ids come from one identity column, so replicas never collide. A sequence hands out ids when a
row is inserted, not when its transaction commits: with two writers, a row with a smaller id
could become visible after a larger one, and `mcpgw logs --follow` (which reads `id > last`)
would skip it. Each insert therefore takes a transaction-level advisory lock first: batches
of all writers commit one at a time, and ids become visible in order. A batch takes
milliseconds; `lock_timeout` bounds the wait, after which the writer keeps its rows and retries.

`ts` is `text collate "C"`: stored and compared exactly as SQLite does (ISO strings of one
shape, compared byte by byte), whatever the database's collation.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import conninfo

from mcpgw.audit.schema import COLUMNS, INDEXES, META_STATEMENTS, SCHEMA_VERSION, index_statement
from mcpgw.audit.store import Connection, Dialect, Store, StoreError
from mcpgw.errors import ConfigError

CONNECT_TIMEOUT = 5
"""Seconds to wait for the server: at start, and on each reconnection of the writer."""
_SESSION = (
    # A writer that stops answering mid-batch (a network partition) must not hold the insert lock.
    "set idle_in_transaction_session_timeout = '30s'",
    "set lock_timeout = '10s'",
)
_NETWORK = {
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq's TCP settings unless the URL gives its own: a server cut off by the network is noticed in
about half a minute, not the operating system's hours, so the writer reconnects (and keeps the rows)."""
_LOCK_CLASS = 0x6D637067
"""The first key of mcpgw's advisory locks ("mcpg"); the second names the schema."""
_INSERT_LOCK = f"select pg_advisory_xact_lock({_LOCK_CLASS}, hashtext(current_schema()))"
_SCHEMA_LOCK = f"select pg_advisory_xact_lock({_LOCK_CLASS} + 1, hashtext(current_schema()))"
_TYPES = {str: "text", int: "bigint", float: "double precision"}
_PASSWORD = re.compile(r"^[a-z]+://[^:/@?#]*:([^@/?#]*)@", re.IGNORECASE)

POSTGRES = Dialect(
    placeholder="%s",
    contains="strpos({column}, ?) > 0",
    errors=(psycopg.Error, OSError),
    insert_lock=_INSERT_LOCK,
)


def _column(name: str) -> str:
    return f"{name} {_TYPES[COLUMNS[name]]}" + (' collate "C"' if name == "ts" else "")


class PostgresStore(Store):
    """The `events` table in the database (and schema: `?options=-csearch_path%3D...`) `url` names."""

    key = "audit.url"

    def __init__(self, url: str) -> None:
        self.url = url
        match = _PASSWORD.match(url)
        self._password = match.group(1) if match else None
        try:
            params = conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(
                f"the audit database URL is not valid: {self._reason(exc)}", key=self.key
            ) from exc
        self._password = self._password or (str(params["password"]) if params.get("password") else None)
        network = {key: value for key, value in _NETWORK.items() if key not in params}
        self._conninfo = conninfo.make_conninfo(url, **network)
        host, port = params.get("host"), params.get("port")
        self.where = (
            "postgresql://"
            + (f"{params['user']}@" if params.get("user") else "")
            + (str(host) if host else "")
            + (f":{port}" if port else "")
            + (f"/{params['dbname']}" if params.get("dbname") else "")
        )

    def _reason(self, exc: BaseException) -> str:
        """A driver's message in one line, never with the password (a malformed URL is echoed)."""
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if self._password:
            text = text.replace(self._password, "***")
        return text or type(exc).__name__

    def connect(self) -> Connection:
        try:
            raw = psycopg.connect(self._conninfo, connect_timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, OSError) as exc:
            raise StoreError(self._reason(exc)) from exc
        connection = Connection(raw, POSTGRES)
        for statement in _SESSION:
            connection.execute(statement)
        return connection

    def prepare(self) -> None:
        self.reading().close()

    def reading(self) -> Connection:
        connection = None
        try:
            connection = self.connect()
            self._ensure_schema(connection)
        except StoreError as exc:
            if connection is not None:
                connection.close()
            raise ConfigError(f"cannot use the audit database {self.where}: {exc}", key=self.key) from exc
        return connection

    def _ensure_schema(self, connection: Connection) -> None:
        """Create the tables and indexes, or add what an older table lacks: in one transaction, under a
        lock, so replicas starting together do not race to create the same table.

        Unlike SQLite's `schema.ensure_schema`, nothing is backfilled: no mcpgw before schema 3
        wrote to PostgreSQL."""
        names = list(COLUMNS)
        statements = [
            _SCHEMA_LOCK,
            "create table if not exists events (id bigint generated always as identity primary key, "
            + ", ".join(_column(name) for name in names)
            + ")",
            *(f"alter table events add column if not exists {_column(name)}" for name in names),
            *(index_statement(columns) for columns in INDEXES),
            *META_STATEMENTS,
        ]

        def run() -> None:
            cursor = connection.raw.cursor()
            for statement in statements:
                params = [str(SCHEMA_VERSION)] if "?" in statement else []
                cursor.execute(POSTGRES.sql(statement), params)

        connection.transaction(run)
