"""Per-user upstream logins: each `[auth]` principal logs in to a `per_user` server once, for itself.

Owns: where each principal's tokens live (`folder`: a folder per principal under the tokens folder,
named by a hash of the principal, each server's file inside it as `mcpgw login` writes one,
owner-only), and the logins in progress (`UserLogins.begin`), each the code flow of
`login.authorize` run in the background: its authorization URL is handed to the caller (as the
link of a "log in first" error or a URL elicitation), and the browser's redirect comes back to the
gateway's own listener (`<public_url>/oauth/callback`), which hands it here by its OAuth `state`
(`arrive`). A login is one principal's: its tokens go to that principal's folder only, and it ends
(unused) after `LOGIN_WINDOW` seconds.

The mcp SDK runs the whole code flow inside one HTTP request of its auth flow, waiting on its
`callback_handler`; a gateway cannot hold a client's call that long, so the flow runs in a task of
its own and the call that started it fails at once with the link.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from mcp.shared.auth import AuthorizationCodeResult

from mcpgw.config.servers import HttpServer, SseServer
from mcpgw.errors import GatewayError, UpstreamUnavailable
from mcpgw.upstream import login
from mcpgw.upstream.tokens import TokenFile

logger = logging.getLogger("mcpgw.login")

LOGIN_WINDOW = 600.0
"""Seconds a login link stays good: the user has this long to approve at the authorization server."""
START_LIMIT = 60.0
"""Seconds discovery and registration may take before the link is known (a hang guard)."""
CALLBACK_PATH = "/oauth/callback"
Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]
"""Runs a task in the gateway's task group (it outlives the call that started the login)."""


def folder(root: Path, principal: str) -> Path:
    """The folder of one principal's upstream tokens: a hash names it (a principal is no file name)."""
    return root / "users" / hashlib.sha256(principal.encode()).hexdigest()[:32]


@dataclass
class Pending:
    """One principal's login to one server, from its link to its tokens (or its failure)."""

    server: str
    principal: str
    expires: float
    url: str | None = None
    """The authorization URL, once discovery and registration are done."""
    state: str | None = None
    error: str | None = None
    linked: anyio.Event = field(default_factory=anyio.Event)
    """Set when `url` (or `error`) is known."""
    done: anyio.Event = field(default_factory=anyio.Event)
    _result: AuthorizationCodeResult | None = None
    _refused: str | None = None
    _arrived: anyio.Event = field(default_factory=anyio.Event)

    async def _opened(self, authorization_url: str) -> None:
        self.url = authorization_url
        states = parse_qs(urlsplit(authorization_url).query).get("state")
        self.state = states[0] if states else None
        self.linked.set()

    async def _callback(self) -> AuthorizationCodeResult:
        await self._arrived.wait()
        if self._result is None:
            raise UpstreamUnavailable(
                self.server, f"login refused by the authorization server: {self._refused}"
            )
        return self._result


class UserLogins:
    """The per-user logins of one gateway: their folders, and the logins in progress."""

    def __init__(self, root: Path, *, callback_url: str, environ: Mapping[str, str], spawn: Spawn) -> None:
        self.root = root
        self.callback_url = callback_url
        self._environ = environ
        self._spawn = spawn
        self._pending: dict[tuple[str, str], Pending] = {}
        self._by_state: dict[str, Pending] = {}

    def store(self, server: str, url: str, principal: str) -> TokenFile:
        return TokenFile(folder(self.root, principal), server, url)

    async def begin(
        self,
        server: str,
        config: HttpServer | SseServer,
        url: str,
        principal: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Pending:
        """The login of `principal` to `server` in progress (started now, or the one already open);
        `headers`: the server's own (not its credentials: a per-user server has none)."""
        key = (server, principal)
        pending = self._pending.get(key)
        if pending is None or pending.done.is_set() or pending.expires < time.monotonic():
            pending = Pending(server, principal, expires=time.monotonic() + LOGIN_WINDOW)
            self._pending[key] = pending
            store = TokenFile(folder(self.root, principal), server, url, fresh=True)
            wanted = store.read().get("wanted_scope")
            self._spawn(lambda: self._run(pending, config, url, headers, store, wanted))
        with anyio.move_on_after(START_LIMIT):
            await pending.linked.wait()
        if pending.url is None:
            raise UpstreamUnavailable(
                server, f"login failed: {pending.error or 'no authorization URL in time'}"
            )
        return pending

    async def _run(
        self,
        pending: Pending,
        config: HttpServer | SseServer,
        url: str,
        headers: Mapping[str, str] | None,
        store: TokenFile,
        scope: object,
    ) -> None:
        try:
            with anyio.move_on_after(LOGIN_WINDOW):
                await login.authorize(
                    pending.server,
                    config,
                    url,
                    headers,
                    store,
                    self._environ,
                    redirect_uri=self.callback_url,
                    open_url=self._opened(pending),
                    callback=pending._callback,
                    scope=scope if isinstance(scope, str) else None,
                )
                store.update(wanted_scope=None)
        except GatewayError as exc:
            pending.error = exc.message
            logger.info("upstream %s: a per-user login failed: %s", pending.server, exc.message)
        finally:
            if pending.url is None and pending.error is None:
                pending.error = "the login took too long"
            pending.linked.set()
            pending.done.set()
            if self._pending.get((pending.server, pending.principal)) is pending:
                del self._pending[(pending.server, pending.principal)]
            if pending.state is not None:
                self._by_state.pop(pending.state, None)

    def _opened(self, pending: Pending) -> login.OpenUrl:
        async def opened(authorization_url: str) -> None:
            await pending._opened(authorization_url)
            if pending.state is not None:
                self._by_state[pending.state] = pending

        return opened

    async def arrive(
        self, state: str | None, code: str | None, *, error: str | None = None, iss: str | None = None
    ) -> Pending | None:
        """The browser is back with `code` (or `error`) for the login of `state`: finish it (waiting
        for the tokens, up to `START_LIMIT`); None when no login of the gateway has that state."""
        pending = self._by_state.pop(state, None) if state else None
        if pending is None:
            return None
        if code:
            pending._result = AuthorizationCodeResult(code=code, state=state, iss=iss)
        else:
            pending._refused = error or "no authorization code"
        pending._arrived.set()
        with anyio.move_on_after(START_LIMIT):
            await pending.done.wait()
        if not pending.done.is_set():
            pending.error = "the authorization server did not answer in time"
        return pending
