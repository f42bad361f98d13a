"""What every console page reads and every console action writes through.

Owns: `Console`, the one object the pages share: the running gateway (its registry follows
live reloads), the registry and audit database files, where action rows go, and whether the
console runs inside the serving gateway (`live`: restarts are possible) or beside it
(`mcpgw admin` for a gateway over stdio: the same files, its own look at the upstreams). Also
the audit log read off the event loop through its store (`read`: a SQLite file or PostgreSQL,
the statements written once in SQLite's spelling, see `audit.store`), which says why when the
log cannot be read instead of failing the page, and `record`, which makes each action an
audit row with its principal before it is answered.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from mcpgw.audit import AuditLog, Connection, Kind, Outcome, Step, Store, StoreError, store_for
from mcpgw.audit.store import sqlite_dialect
from mcpgw.config import Registry
from mcpgw.errors import ConfigError

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway

T = TypeVar("T")


@dataclass
class Console:
    """The console's view of one gateway, and its files."""

    gateway: Gateway
    registry_path: Path | None
    """The file actions edit (None: the shipped default, which cannot be edited)."""
    actions: AuditLog | None
    """Where action rows go: the serving gateway's own log, or one `mcpgw admin` opened."""
    live: bool = True
    """Inside the serving gateway (restart acts on the upstreams clients use)."""
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """This process's secret for CSRF tokens and session ids: forms die with the process."""
    _reader: tuple[str, Connection] | None = field(default=None, repr=False)
    """A database server's connection kept between reads (the Traffic stream reads 5 times a
    second), with the store it is to; a SQLite file is opened per read, which costs nothing."""
    _reader_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def registry(self) -> Registry:
        return self.gateway.registry

    @property
    def store(self) -> Store | None:
        """Where the audit rows are: the action log's store, else the one `[audit]` names."""
        if self.actions is not None:
            return self.actions.store
        return store_for(self.registry.audit) if self.registry.audit.enabled else None

    @property
    def audit_path(self) -> Path | None:
        store = self.store
        return store.path if store is not None else None

    def editable(self) -> Path:
        if self.registry_path is None:
            raise ConfigError(
                "the gateway serves the registry shipped in the package; give it a file (--config) to edit"
            )
        return self.registry_path

    async def read(self, query: Callable[[Connection], T], default: T) -> tuple[T, str | None]:
        """`query(db)` on the audit log, in a worker thread: its result and None; or `default` and
        None when there is no log yet, and `default` and why when it cannot be read (the database
        server is down), for the page to say so."""
        store = self.store
        if store is None or (store.path is not None and not store.path.exists()):
            return default, None
        try:
            return await anyio.to_thread.run_sync(lambda: self._run(store, query)), None
        except StoreError as exc:
            return default, f"cannot read the audit log ({store.where}): {exc}"

    def _run(self, store: Store, query: Callable[[Connection], T]) -> T:
        if store.path is not None:
            # Read-only and short-waiting: the writer thread holds the file now and then.
            uri = f"{store.path.resolve().as_uri()}?mode=ro"
            try:
                raw = sqlite3.connect(uri, uri=True, timeout=2.0)
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc
            with Connection(raw, sqlite_dialect()) as db:
                return query(db)
        with self._reader_lock:
            if self._reader is None or self._reader[0] != store.where:
                if self._reader is not None:
                    self._reader[1].close()
                self._reader = (store.where, store.connect())
            try:
                return query(self._reader[1])
            except StoreError:
                self._reader[1].close()  # the server may be gone: the next read connects anew
                self._reader = None
                raise

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader[1].close()
                self._reader = None

    async def record(
        self,
        action: str,
        *,
        principal: str,
        server: str | None = None,
        name: str | None = None,
        outcome: Outcome = Outcome.OK,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """One action (or refused action) as an audit row, on disk before it is answered."""
        if self.actions is None:
            return
        step = Step(
            kind=Kind.ADMIN,
            method=f"admin/{action}",
            principal=principal,
            server=server,
            name=name,
            outcome=outcome,
            error=error,
            arguments=details,
        )
        await self.actions.commit(step)
