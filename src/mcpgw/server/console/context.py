"""What every console page reads and every console action writes through.

Owns: `Console`, the one object the pages share: the running gateway (its registry follows
live reloads), the registry and audit database files, where action rows go, and whether the
console runs inside the serving gateway (`live`: restarts are possible) or beside it
(`mcpgw admin` for a gateway over stdio: the same files, its own look at the upstreams). Also
the audit database read off the event loop (`read`), and `record`, which makes each action an
audit row with its principal before it is answered.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from mcpgw.audit import AuditLog, Kind, Outcome, Step, path_for
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

    @property
    def registry(self) -> Registry:
        return self.gateway.registry

    @property
    def audit_path(self) -> Path | None:
        if self.actions is not None:
            return self.actions.path
        return path_for(self.registry.audit) if self.registry.audit.enabled else None

    def editable(self) -> Path:
        if self.registry_path is None:
            raise ConfigError(
                "the gateway serves the registry shipped in the package; give it a file (--config) to edit"
            )
        return self.registry_path

    async def read(self, query: Callable[[Any], T], default: T) -> T:
        """`query(db)` on the audit database, in a worker thread; `default` when there is none yet."""
        path = self.audit_path
        if path is None or not path.exists():
            return default

        def run() -> T:
            import sqlite_utils

            # Read-only and short-waiting: the writer thread holds the file now and then.
            uri = f"{path.resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=2.0)) as conn:
                return query(sqlite_utils.Database(conn))

        try:
            return await anyio.to_thread.run_sync(run)
        except sqlite3.Error:
            return default

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
