"""Per-user upstream sessions: a `per_user` server's calls go upstream as the caller, in its own session.

Owns: `PerUser`, which picks the upstream a forwarded request goes to. For every server but one
with `[servers.X.login] per_user = true` that is the shared upstream. For a per-user server it is
the caller's own `Upstream` (by its `[auth]` principal), started on the principal's first call
from the tokens the principal logged in with (`upstream.userlogin`), and never handed to another
principal; the shared upstream (the gateway's own login, if any) only lists the server's tools,
resources and prompts for the catalog. A principal with no login yet, or whose login the server
refused (revoked, expired past refreshing, or short of scope), gets `UserLoginRequired` with the
link of a login begun for it, as -32042 (URL elicitation) where its client takes that.

No caller's own token to the gateway is ever sent upstream: the upstream token is the one the
principal got from the upstream's authorization server.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcpgw.config import ServerConfig
from mcpgw.config.servers import HttpServer, SseServer
from mcpgw.errors import (
    Unavailable,
    UpstreamUnavailable,
    UrlElicitationRequired,
    UserLoginRequired,
)
from mcpgw.upstream import Hooks, Upstream, credentials, tokens
from mcpgw.upstream import for_server as upstream_for
from mcpgw.upstream.inflight import ClientChannel

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway
    from mcpgw.upstream import userlogin
    from mcpgw.upstream.userlogin import Pending, UserLogins

logger = logging.getLogger("mcpgw.peruser")

Result = dict[str, Any]


def per_user(config: ServerConfig) -> bool:
    # Not `getattr(config, "login", None)`: on a model without the field, pydantic's `__getattr__`
    # raises and catches an AttributeError, a few microseconds on every call to a stdio server.
    if not isinstance(config, HttpServer | SseServer):
        return False
    return config.login is not None and bool(config.login.per_user)


class PerUser:
    """Each principal's own sessions of the per-user servers, and their logins."""

    def __init__(
        self, gateway: Gateway, *, secrets: Callable[[], Mapping[str, str]], spawn: userlogin.Spawn
    ) -> None:
        self._gateway = gateway
        self._secrets = secrets
        self._spawn = spawn
        self._sessions: dict[tuple[str, str], Upstream] = {}
        self._used: dict[tuple[str, str], float] = {}
        """When each session last took a call (monotonic seconds)."""
        self._logins: UserLogins | None = None

    def _make(self, name: str, config: ServerConfig, folder: Path) -> Upstream:
        """An upstream like the gateway's own (its limits; its log lines, sampling and elicitation
        answered the same way), logged in from `folder`. Its lists are not the catalog's (the shared
        upstream's are), so it tells nobody when they change."""
        gateway = self._gateway
        sampler = gateway.sampler
        hooks = Hooks(
            on_log=gateway.logs.deliver,
            on_sampling=gateway.bridge.on_sampling if sampler.answers_sampling(name) else None,
            on_elicitation=gateway.bridge.on_elicitation if sampler.answers_elicitation(name) else None,
        )
        return upstream_for(
            name, config, gateway.registry, secrets=self._secrets(), hooks=hooks, tokens_dir=folder
        )

    def running(self) -> list[Upstream]:
        return list(self._sessions.values())

    def logins(self) -> UserLogins | None:
        """The per-user logins (None without `[auth]`: nobody to log in as)."""
        registry = self._gateway.registry
        if registry.auth is None:
            return None
        # Imported here: per-user logins (and the SDK's OAuth client) only load with `[auth]`.
        from mcpgw.upstream.userlogin import CALLBACK_PATH, UserLogins

        root = tokens.tokens_dir(registry.gateway)
        callback = registry.auth.public_url.rstrip("/") + CALLBACK_PATH
        current = self._logins
        if current is None or (current.root, current.callback_url) != (root, callback):
            current = self._logins = UserLogins(
                root, callback_url=callback, environ=self._environ(), spawn=self._spawn
            )
        return current

    def _environ(self) -> Mapping[str, str]:
        return credentials.environ(self._secrets())

    async def upstream(self, shared: Upstream, client: ClientChannel | None) -> Upstream:
        """Where a request for `shared` goes: `shared` itself, or the caller's own session of it."""
        config = shared.config
        if not per_user(config):
            return shared
        assert isinstance(config, HttpServer | SseServer)  # `login` is a URL server's
        principal = client.principal if client is not None else None
        logins = self.logins()
        if principal is None or logins is None:
            raise Unavailable(f"upstream '{shared.name}' logs in per user: call it over HTTP with [auth]")
        self._close_idle()
        key = (shared.name, principal)
        url = config.to_params(shared.name, environ=self._environ()).url
        own = self._sessions.get(key)
        if own is not None and own.config != config:  # a reload changed the server: a new session
            self._drop(key, own)
            own = None
        if own is None:
            from mcpgw.upstream.userlogin import folder as userlogin_folder  # loaded by `logins()`

            if logins.store(shared.name, url, principal).tokens() is None:
                raise await self._login_required(logins, shared.name, config, url, client)
            own = self._sessions[key] = self._make(
                shared.name, config, userlogin_folder(logins.root, principal)
            )
            self._spawn(own.run)
        if own.state in ("starting", "restarting"):
            await own.wait_settled()
        if own.state == "ready":
            self._used[key] = time.monotonic()
            return own
        self._drop(key, own)
        # Refused at start-up (revoked, expired past refreshing): the session forgot the tokens.
        if logins.store(shared.name, url, principal).tokens() is None:
            raise await self._login_required(logins, shared.name, config, url, client)
        raise own.unavailable()

    async def forward(
        self, shared: Upstream, client: ClientChannel | None, send: Callable[[Upstream], Awaitable[Result]]
    ) -> Result:
        """`send` a per-user server's request to where it goes (`upstream`); a shared server's is
        `send`'s alone (`core.kinds`, which asks `per_user` first). A caller whose login the server
        refused during the call (revoked, or short of scope: its session then forgot the tokens) gets
        a new login link instead of the bare refusal."""
        own = await self.upstream(shared, client)
        if own is shared:
            return await send(shared)
        assert client is not None and client.principal is not None
        key = (shared.name, client.principal)
        try:
            return await send(own)
        except UpstreamUnavailable:
            logins = self.logins()
            assert isinstance(shared.config, HttpServer | SseServer) and logins is not None
            url = shared.config.to_params(shared.name, environ=self._environ()).url
            if logins.store(shared.name, url, client.principal).tokens() is not None:
                raise
            self._drop(key, own)
            raise await self._login_required(logins, shared.name, shared.config, url, client) from None
        finally:
            if self._sessions.get(key) is own:
                self._used[key] = time.monotonic()  # idle from the end of its last call

    def _drop(self, key: tuple[str, str], own: Upstream) -> None:
        """Stop `own`, and forget it if it is still the session at `key` (another call may have
        started the next one already)."""
        if self._sessions.get(key) is own:
            del self._sessions[key]
            self._used.pop(key, None)
        own.stop(reason="its per-user session ended")

    def _close_idle(self) -> None:
        """Close the sessions no call used for `[gateway] session_idle_timeout` (a caller's next
        call opens a new one, with the tokens it logged in with)."""
        limit = self._gateway.registry.gateway.session_idle_timeout
        now = time.monotonic()
        for key, own in list(self._sessions.items()):
            used = self._used.get(key)
            if used is not None and own.in_flight == 0 and now - used > limit:
                self._drop(key, own)

    async def _login_required(
        self,
        logins: UserLogins,
        server: str,
        config: HttpServer | SseServer,
        url: str,
        client: ClientChannel | None,
    ) -> UserLoginRequired:
        assert client is not None and client.principal is not None
        headers = config.to_params(server, environ=self._environ()).headers
        pending: Pending = await logins.begin(server, config, url, client.principal, headers=headers)
        assert pending.url is not None
        logger.info("upstream %s: a per-user login is due; its link went to the caller", server)
        if client.elicits_urls and not client.modern:
            return UrlElicitationRequired(server, pending.url, elicitation_id=uuid.uuid4().hex)
        return UserLoginRequired(server, pending.url)

    async def arrive(
        self, state: str | None, code: str | None, *, error: str | None, iss: str | None
    ) -> Pending | None:
        """The browser's redirect back to the gateway (see `userlogin.UserLogins.arrive`)."""
        logins = self._logins
        return None if logins is None else await logins.arrive(state, code, error=error, iss=iss)
