"""Live reload of a serving gateway's registry: on SIGHUP, and when its files change.

Owns: `Reloader`, which watches the registry file and the `[gateway]
secrets_file` it names (the lock file is the pin policy's to watch, see
`Gateway._watch_lock`), reads them when they change, builds the new parts
through the composition root (`assembly.reload_parts`) and hands them to
`Gateway.reconfigure`; and what the last reload did, for the log, `/healthz` and
the audit log (a `config` row per reload, refused or not). A file that does not
load (bad TOML, an unknown key, a persona naming no server, a missing secrets
file) is refused as a whole: the running configuration stays, and the log and
`/healthz` say which file, which key and why.

Files are watched through their directories (`watchfiles`: inotify where the
system has it, polling where `WATCHFILES_FORCE_POLLING` is set), so an editor
that writes a temporary file and renames it over the registry, or vim's
rename-and-rewrite, is seen like an edit in place; what changed is decided by
the files' contents, so a `touch`, or an edit undone, reloads nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import watchfiles

from mcpgw import assembly, config
from mcpgw.audit import Kind, Outcome
from mcpgw.catalog import personas
from mcpgw.core import reload as reload_mod
from mcpgw.core.gateway import Gateway
from mcpgw.core.reload import Plan
from mcpgw.errors import ConfigError, GatewayError, UnknownPersona
from mcpgw.upstream import credentials

logger = logging.getLogger("mcpgw.reload")

WATCH_TIMEOUT_MS = 1000
RECHECK_SECONDS = float(os.environ.get("MCPGW_RELOAD_RECHECK_SECONDS") or 2.0)
"""How often the files' content is compared with what was last tried, besides the watcher: an edit
made before the watcher was set up (or one an unusual mount never reports) is still taken."""
"""How long watchfiles' thread waits before looking at its stop event: bounds the wait at shutdown."""


@dataclass(frozen=True)
class Refusal:
    """Why the last reload was refused: the file, the key and the reason (as a `ConfigError` says)."""

    file: str
    key: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "key": self.key, "reason": self.reason}


class Reloader:
    """Reloads the registry at `path` into the running `gateway` when asked or when its files change."""

    def __init__(
        self, gateway: Gateway, path: Path, *, persona: str | None = None, host: str | None = None
    ) -> None:
        self.gateway = gateway
        self.path = path
        self.persona = persona
        """The persona a stdio gateway serves: a reload that drops it is refused."""
        self.host = host
        """The address an HTTP gateway listens on: a reload is held to the same exposure policy as a
        start (`auth.check_exposure`: production refuses dropping `[auth]` off loopback)."""
        self.reloads = 0
        """Reloads that changed something."""
        self.loaded_at = time.time()
        self.refused: Refusal | None = None
        """Why the last attempt was refused; None once one succeeds (or the files are back as loaded)."""
        self.restart_needed: tuple[str, ...] = ()
        """Keys the running files change that apply only when mcpgw restarts (`core.reload`)."""
        self._started_with = gateway.registry
        self._loaded = self._digest()
        self._tried = self._loaded
        """The content last loaded or refused: the recheck asks again only when the files differ from it."""
        self._wanted = anyio.Event()
        self._stop = anyio.Event()

    def status(self) -> dict[str, Any]:
        """What `/healthz` shows under `config`."""
        return {
            "file": str(self.path),
            "status": "refused" if self.refused is not None else "loaded",
            "loaded_at": round(self.loaded_at, 3),
            "reloads": self.reloads,
            "refused": self.refused.as_dict() if self.refused is not None else None,
            "restart_needed": list(self.restart_needed),
        }

    def request(self) -> None:
        """Reload as soon as possible (SIGHUP); requests made while one runs make one more."""
        self._wanted.set()

    def close(self) -> None:
        """Stop watching (the watcher's thread notices within `WATCH_TIMEOUT_MS`)."""
        self._stop.set()

    async def run(self) -> None:
        """Watch the files and reload on request, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch)
            tg.start_soon(self._recheck)
            try:
                while True:
                    await self._wanted.wait()
                    self._wanted = anyio.Event()
                    await self.reload()
            finally:
                self.close()

    async def reload(self) -> Plan | None:
        """Load the files and apply them; the plan applied, or None when nothing was (see `refused`)."""
        digest = self._digest()
        self._tried = digest
        if digest == self._loaded:
            if self.refused is not None:
                logger.info("registry %s is back as loaded; the refused edit is gone", self.path)
                self.refused = None
            else:
                logger.info("registry %s unchanged; nothing to reload", self.path)
            return None
        try:
            registry = self._load()
            parts = assembly.reload_parts(registry, registry_path=self.path, running=self.gateway)
            plan = await self.gateway.reconfigure(parts)
        except ConfigError as exc:
            self._refuse(Refusal(file=exc.file or str(self.path), key=exc.key, reason=exc.reason))
            return None
        except GatewayError as exc:
            self._refuse(Refusal(file=str(self.path), key=None, reason=str(exc)))
            return None
        except Exception as exc:  # a bug must not take the serving gateway down with it
            logger.exception("registry reload failed")
            self._refuse(Refusal(file=str(self.path), key=None, reason=f"internal error: {exc!r}"))
            return None
        if not plan.empty and self.gateway.audit is not None:
            self.gateway.audit.event(Kind.CONFIG, name=str(self.path), result=plan.as_dict())
        self._loaded, self.refused, self.loaded_at = digest, None, time.time()
        self.restart_needed = reload_mod.waiting_for_restart(self._started_with, registry)
        if not plan.empty:
            self.reloads += 1
        logger.info("registry %s reloaded: %s", self.path, plan.describe())
        if plan.restart_needed:
            logger.warning(
                "registry %s: %s changed; kept as started until mcpgw restarts",
                self.path,
                ", ".join(plan.restart_needed),
            )
        return plan

    def _refuse(self, refusal: Refusal) -> None:
        self.refused = refusal
        where = ": ".join(part for part in (refusal.file, refusal.key, refusal.reason) if part)
        logger.error("registry reload refused; the running configuration stays: %s", where)
        if self.gateway.audit is not None:
            self.gateway.audit.event(Kind.CONFIG, name=str(self.path), outcome=Outcome.ERROR, error=where)

    def _load(self) -> config.Registry:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("file not found", file=str(self.path)) from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=str(self.path)) from None
        if not text.strip():
            # Most likely caught between an in-place writer's truncation and its write; an empty
            # file would otherwise stop every server.
            raise ConfigError(
                "the file is empty (still being written?); to serve no servers, keep a [gateway] table",
                file=str(self.path),
            )
        registry = config.parse(text, source=str(self.path))
        if self.host is not None:  # HTTP only: stdio's start need not import the auth stack (fastmcp)
            from mcpgw.server import auth

            auth.check_exposure(registry, host=self.host)
        try:
            personas.resolve(registry, self.persona)
        except UnknownPersona as exc:
            raise ConfigError(
                f"persona {self.persona!r}, which this gateway serves (--persona), is gone: {exc}",
                file=str(self.path),
                key="personas",
            ) from None
        return registry

    # --- the files --------------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        """The registry and the secrets file the running registry names."""
        files = [self.path]
        try:
            secrets = credentials.secrets_path(self.gateway.registry.gateway)
        except ConfigError:
            secrets = None
        if secrets is not None:
            files.append(secrets)
        return [Path(os.path.abspath(f)) for f in files]

    async def _recheck(self) -> None:
        """Ask for a reload whenever the files hold something not yet tried, watcher or not."""
        while True:
            if self._digest() != self._tried:
                self._wanted.set()
            await anyio.sleep(RECHECK_SECONDS)

    def _digest(self) -> str:
        """What the files hold now (a missing file counts as its own content)."""
        sha = hashlib.sha256()
        for path in self._files():
            try:
                sha.update(path.read_bytes())
            except OSError as exc:
                sha.update(f"\0unreadable: {exc.errno}".encode())
            sha.update(b"\0\0")
        return sha.hexdigest()

    async def _watch(self) -> None:
        """Ask for a reload when a watched file's directory changes near it; re-aim after each batch
        (a reload may have named another secrets file)."""
        try:
            await self._watch_files()
        except (OSError, RuntimeError) as exc:  # e.g. out of inotify watches: SIGHUP still reloads
            logger.warning("not watching %s for changes (%s); SIGHUP reloads it", self.path, exc)

    async def _watch_files(self) -> None:
        while not self._stop.is_set():
            files = self._files()
            directories = sorted({str(f.parent) for f in files if f.parent.is_dir()})
            async for _ in watchfiles.awatch(
                *directories,
                watch_filter=_Near({f.name for f in files}),
                recursive=False,
                stop_event=self._stop,
                rust_timeout=WATCH_TIMEOUT_MS,
            ):
                self.request()
                if self._files() != files:
                    break


class _Near:
    """A watchfiles filter: changes to the watched files' names in their directories."""

    def __init__(self, names: set[str]) -> None:
        self._names = names

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        # `..data` and the like: Kubernetes swaps a mounted file through a symlinked directory.
        return name in self._names or name.startswith("..")
