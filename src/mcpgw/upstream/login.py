"""OAuth login to an upstream: `mcpgw login`, `mcpgw logout`, and the tokens a running gateway sends.

Owns: `LoginAuth`, the httpx auth of a URL server that takes a login (see
`UrlServer.takes_login`): the mcp SDK's `OAuthClientProvider` (RFC 9728 and RFC 8414/OpenID
discovery, RFC 7591 registration or a client ID metadata document, the authorization code with
PKCE, RFC 8707 resource indicators) over `tokens.TokenFile`, with what it lacks added around it;
and `login`, which runs that flow once with a browser and the loopback receiver (`logout` is
its own module).

Where the SDK falls short (mcp 2.3), and what is done here instead:
- it refreshes only once a token has expired: `LoginAuth` refreshes `REFRESH_BEFORE` seconds
  ahead (at most half the lifetime);
- on a 401 it starts a new authorization at once, never trying its refresh token: `LoginAuth`
  refreshes first, and only a 401 after that means a new login;
- it keeps the authorization server's metadata and the expiry time in memory only, so a restarted
  process refreshes at `ORIGIN/token`: both are stored with the tokens and restored;
- it has no revocation: `logout` uses Authlib's client.
A running gateway never opens a browser: where a login is due, a call fails with `NeedsLogin`.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER

from mcpgw import _compat
from mcpgw.config import GatewaySettings, UpstreamLogin, expand
from mcpgw.config.servers import HttpServer, SseServer
from mcpgw.errors import NeedsLogin, UpstreamUnavailable
from mcpgw.upstream import dpop, loopback, relogin
from mcpgw.upstream.dpop import DPoP
from mcpgw.upstream.tokens import TokenFile, tokens_dir

logger = logging.getLogger("mcpgw.login")

REFRESH_BEFORE = 60.0
"""Seconds before expiry at which an access token is refreshed (at most half its lifetime)."""
PROTOCOL_VERSION = "2025-11-25"
"""Sent with the login's first request: the SDK asks for the resource (RFC 8707) from 2025-06-18 on."""

UrlServer = HttpServer | SseServer
OpenUrl = Callable[[str], Awaitable[None]]
Callback = Callable[[], Awaitable[AuthorizationCodeResult]]
"""Waits for the redirect back from the authorization server (the SDK's `callback_handler`)."""


class LoginAuth(httpx2.Auth):
    """The SDK's `OAuthClientProvider`, refreshing early and on a 401, and never authorizing unless told.

    The SDK's own errors (discovery, registration, token endpoint) become `UpstreamUnavailable` here.
    """

    def __init__(
        self,
        server: str,
        provider: OAuthClientProvider,
        *,
        authorize: bool,
        on_refused: Callable[[str], None] | None = None,
        on_step_up: Callable[[str], None] | None = None,
        through_client: bool = False,
        dpop: DPoP | None = None,
    ) -> None:
        self.server = server
        self.dpop = dpop
        """Proves possession of the login's key where its authorization server offers DPoP."""
        self.through_client = through_client
        """The flow's authorization URL goes to the caller's client (`relogin`): a 401 that is not
        OAuth's still reaches the transport as it came."""
        self.on_step_up = on_step_up
        """Told the scope a new login should ask for when the server wants more (403 insufficient_scope)."""
        self.provider = provider
        self.authorize = authorize
        """Whether a 401 runs the SDK's flow (the browser login, or the client-credentials grant)."""
        self.on_refused = on_refused

    def _refresh_due(self) -> bool:
        context = self.provider.context
        tokens, expiry = context.current_tokens, context.token_expiry_time
        if not tokens or not expiry or not tokens.expires_in:
            return False
        return time.time() > expiry - min(REFRESH_BEFORE, tokens.expires_in / 2)

    def _signed(self, outgoing: httpx2.Request, request: httpx2.Request) -> httpx2.Request:
        """`outgoing` with its DPoP proof, where the login uses DPoP (see `dpop`)."""
        proofs, metadata = self.dpop, self.provider.context.oauth_metadata
        if proofs is None or not proofs.offered:
            return outgoing
        if outgoing is request and proofs.bound:
            proofs.sign_resource_request(outgoing)
        elif dpop.is_token_request(outgoing, metadata):
            proofs.sign_token_request(outgoing)
        return outgoing

    def sends_nothing(self) -> bool:
        """Its tokens loaded and none to send (so none to refresh): a request goes out as it came."""
        return _compat.oauth_initialized(self.provider) and self.provider.context.current_tokens is None

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        context = self.provider.context
        answered: httpx2.Response | None = None
        # The SDK's flow locks from a request to its answer: with nothing to add, sent here, unlocked.
        if self.sends_nothing():
            context.protocol_version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
            answered = yield request
            if answered.status_code not in (401, 403):
                return
        for attempt in range(2):
            if attempt or self._refresh_due():
                context.token_expiry_time = 1.0  # expired, in the SDK's eyes: it refreshes first
            flow = self.provider.async_auth_flow(request)
            try:
                outgoing = await flow.__anext__()
                while True:
                    if (
                        answered is not None
                        and outgoing is request
                        and "authorization" not in request.headers
                    ):
                        response, answered = answered, None  # sent above, as the SDK would have
                    else:
                        answered = None
                        response = yield self._signed(outgoing, request)
                    if self.dpop is not None and await self.dpop.wants_nonce(outgoing, response):
                        response = yield self._signed(outgoing, request)  # again, with its nonce
                    if self.dpop is not None and dpop.is_token_request(outgoing, context.oauth_metadata):
                        response = await self.dpop.token_answer(response)
                    elif self.dpop is not None:
                        await self.dpop.metadata_answer(outgoing, response)
                    refused = outgoing is request and response.status_code == 401
                    if refused and attempt == 0 and context.can_refresh_token():
                        break  # revoked or expired early at the issuer: refresh, then once more
                    # More scope wanted (403 insufficient_scope): a refresh cannot widen a grant.
                    step_up = (
                        outgoing is request
                        and response.status_code == 403
                        and ("insufficient_scope" in response.headers.get("www-authenticate", ""))
                    )
                    passing = not self.authorize or self.through_client
                    if refused and passing and not _oauth_refusal(response, context):
                        return  # not OAuth (an API key, say): the 401 reaches the transport as it came
                    if step_up and not self.authorize and self.on_step_up is not None:
                        self.on_step_up(relogin.widened(context, response))
                    if (refused or step_up) and not self.authorize:
                        needed = NeedsLogin(self.server)
                        if self.on_refused is not None:
                            self.on_refused(needed.reason)
                        raise needed
                    outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return
            except (OAuthFlowError, OAuthRegistrationError, OAuthTokenError) as exc:
                raise UpstreamUnavailable(self.server, f"OAuth: {exc}") from None
            finally:
                await flow.aclose()


def _oauth_refusal(response: httpx2.Response, context: Any) -> bool:
    """Whether a 401 is an OAuth server's: a Bearer challenge, or a refusal of our stored login."""
    challenge = response.headers.get("www-authenticate", "").lstrip().lower()
    return challenge.startswith(("bearer", "dpop")) or context.current_tokens is not None


def _login_values(server: str, login: UpstreamLogin | None, environ: Mapping[str, str]) -> dict[str, Any]:
    if login is None:
        return {}
    fields = ("client_id", "client_secret", "scope", "client_metadata_url")
    return {
        field: expand(value, key=f"servers.{server}.login.{field}", environ=environ)
        for field in fields
        if (value := getattr(login, field)) is not None
    }


def _provider(
    server: str,
    url: str,
    store: TokenFile,
    login: UpstreamLogin | None,
    environ: Mapping[str, str],
    *,
    redirect_uri: str,
    open_url: OpenUrl | None = None,
    callback: Callback | None = None,
    scope: str | None = None,
) -> OAuthClientProvider:
    values = _login_values(server, login, environ)
    if scope:
        values["scope"] = scope
    method = login.auth_method if login is not None and values.get("client_secret") else "none"
    metadata = OAuthClientMetadata(
        client_name="mcpgw",
        redirect_uris=[redirect_uri],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
        scope=values.get("scope"),
    )
    if values.get("client_id"):
        stored = store.client()
        if stored is None or stored.client_id != values["client_id"]:
            configured = OAuthClientInformationFull(
                client_id=values["client_id"],
                client_secret=values.get("client_secret"),
                redirect_uris=[redirect_uri],  # type: ignore[list-item]
                token_endpoint_auth_method=method,  # type: ignore[arg-type]
            )
            store.update(client=configured.model_dump(mode="json", exclude_none=True))

    async def no_browser(authorization_url: str) -> None:
        raise NeedsLogin(server)

    try:
        provider = OAuthClientProvider(
            url,
            metadata,
            store,
            redirect_handler=open_url or no_browser,
            callback_handler=callback,
            client_metadata_url=values.get("client_metadata_url"),
        )
    except ValueError as exc:
        raise UpstreamUnavailable(server, f"servers.{server}.login: {exc}") from None
    # What the SDK would otherwise only learn on the next 401 (see the module docstring).
    context = provider.context
    context.current_tokens = None if store.fresh else store.tokens()
    context.client_info = store.client()
    context.oauth_metadata = store.oauth_metadata()
    context.token_expiry_time = store.expires_at()
    return provider


def upstream_auth(
    server: str,
    config: UrlServer,
    url: str,
    folder: Path,
    environ: Mapping[str, str],
    *,
    on_refused: Callable[[str], None] | None = None,
    ask: relogin.Ask | None = None,
) -> LoginAuth | None:
    """The auth a running gateway sends `server` with (None: it has another credential).

    `ask`: where a login due during a call may be put to the caller's client (`relogin`); None:
    such a call fails with `NeedsLogin`."""
    if not config.takes_login():
        return None
    store = TokenFile(folder, server, url)
    client = store.client()
    redirect = (
        str(client.redirect_uris[0]) if client and client.redirect_uris else "http://127.0.0.1/callback"
    )
    per_user = config.login is not None and config.login.per_user

    def step_up(scope: str) -> None:
        store.update(wanted_scope=scope)  # what the next login asks for (per-user logins read it)

    def refused(reason: str) -> None:
        if per_user:
            # A caller's login the server refused is spent: its next call gets a new login link.
            store.update(tokens=None, expires_at=None)
        if on_refused is not None:
            on_refused(reason)

    if ask is not None and not per_user:
        through = relogin.ThroughClient(server, ask=ask, on_refused=refused)
        provider = _provider(
            server,
            url,
            store,
            config.login,
            environ,
            redirect_uri=redirect,
            open_url=through.open_url,
            callback=through.callback,
        )
        return LoginAuth(
            server,
            provider,
            authorize=True,
            on_refused=refused,
            on_step_up=step_up,
            through_client=True,
            dpop=DPoP(store),
        )
    provider = _provider(server, url, store, config.login, environ, redirect_uri=redirect)
    return LoginAuth(
        server, provider, authorize=False, on_refused=refused, on_step_up=step_up, dpop=DPoP(store)
    )


@dataclass(frozen=True)
class Login:
    """Who is logged in to a server, as `mcpgw login` shows it."""

    server: str
    url: str
    issuer: str | None
    client_id: str | None
    subject: str | None
    scope: str | None
    expires_at: float | None
    refreshable: bool


def _subject(access_token: str) -> str | None:
    """The `sub` (or name) of a JWT access token, for display only: the token is not verified here."""
    parts = access_token.split(".")
    if len(parts) != 3:
        return None  # an opaque token: only the authorization server knows whose it is
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    for claim in ("email", "preferred_username", "name", "sub"):
        if isinstance(claims.get(claim), str):
            return str(claims[claim])
    return None


def status(server: str, url: str, settings: GatewaySettings) -> Login | None:
    """The stored login of `server` at `url`, if any."""
    store = TokenFile(tokens_dir(settings), server, url)
    tokens = store.tokens()
    if tokens is None:
        return None
    metadata, client = store.oauth_metadata(), store.client()
    return Login(
        server=server,
        url=url,
        issuer=str(metadata.issuer) if metadata else None,
        client_id=client.client_id if client else None,
        subject=_subject(tokens.access_token),
        scope=tokens.scope,
        expires_at=store.expires_at(),
        refreshable=bool(tokens.refresh_token),
    )


def _port(store: TokenFile, login: UpstreamLogin | None) -> int:
    """The configured port, else the one the stored client was registered with (its redirect URI)."""
    if login is not None and login.redirect_port:
        return login.redirect_port
    client = store.client()
    if client and client.redirect_uris:
        uri = client.redirect_uris[0]
        if uri.host == "127.0.0.1" and uri.port:
            return uri.port
    return 0


_KNOCKS: tuple[dict[str, Any], ...] = (
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcpgw-login", "version": "1"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
)
"""What the login sends until the server asks for a login: some let `initialize` in without one."""


async def _knock(
    url: str, headers: Mapping[str, str] | None, auth: LoginAuth, store: TokenFile, *, sse: bool
) -> int:
    """Send `_KNOCKS` until the flow has run (or the server refuses); the last status answered.

    A legacy SSE server is knocked on by opening its event stream (GET), closed once answered."""
    sent = {
        **(headers or {}),
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL_VERSION,
    }
    answered = 0
    async with httpx2.AsyncClient(auth=auth, timeout=30.0) as client:
        if sse:
            async with client.stream("GET", url, headers={**sent, "Accept": "text/event-stream"}) as response:
                return response.status_code
        stateless = False
        for message in _KNOCKS:
            if stateless and "id" not in message:
                continue  # no session to say `initialized` to
            # The SDK steps up a 403 insufficient_scope on the request after the one it met: the
            # token just obtained may be refused that way, so a 403 is sent once more.
            for _ in range(2):
                async with client.stream("POST", url, json=message, headers=sent) as response:
                    answered = response.status_code
                    if session := response.headers.get("mcp-session-id"):
                        sent["Mcp-Session-Id"] = session
                if answered != 403:
                    break
            # An `initialize` refused with 400 may be a server of the stateless era only (2026-07-28):
            # its `tools/list` still asks for the login.
            stateless = answered == 400 and message is _KNOCKS[0]
            if not store.fresh or (answered >= 400 and not stateless):
                break
    return answered


async def login(
    server: str,
    config: UrlServer,
    url: str,
    headers: Mapping[str, str] | None,
    settings: GatewaySettings,
    environ: Mapping[str, str],
    *,
    open_url: OpenUrl,
) -> Login:
    """Log in to `server` (discovery, registration, the code flow via `open_url`) and store the tokens."""
    if not config.takes_login():
        raise UpstreamUnavailable(server, "has its own credentials (`oauth` or an Authorization header)")
    store = TokenFile(tokens_dir(settings), server, url, fresh=True)
    async with loopback.receiving(server, port=_port(store, config.login)) as receiver:
        await authorize(
            server,
            config,
            url,
            headers,
            store,
            environ,
            redirect_uri=receiver.redirect_uri,
            open_url=open_url,
            callback=receiver.wait,
        )
    found = status(server, url, settings)
    assert found is not None  # `authorize` stored the tokens
    return found


async def authorize(
    server: str,
    config: UrlServer,
    url: str,
    headers: Mapping[str, str] | None,
    store: TokenFile,
    environ: Mapping[str, str],
    *,
    redirect_uri: str,
    open_url: OpenUrl,
    callback: Callback,
    scope: str | None = None,
) -> None:
    """The code flow for `store` (a `fresh` one): discovery, registration, `open_url` with the
    authorization URL, `callback` for the redirect to `redirect_uri`, the tokens stored. `mcpgw login`
    runs it with the loopback receiver; a per-user login (`userlogin`) with the gateway's listener.
    `scope` asks for more than configured (a step-up: what the server challenged with, and before)."""

    async def opened(authorization_url: str) -> None:
        await open_url(relogin.asking_for(authorization_url, scope) if scope else authorization_url)

    provider = _provider(
        server,
        url,
        store,
        config.login,
        environ,
        redirect_uri=redirect_uri,
        open_url=opened,
        callback=callback,
        scope=scope,
    )
    auth = LoginAuth(server, provider, authorize=True, dpop=DPoP(store))
    try:
        answered = await _knock(url, headers, auth, store, sse=isinstance(config, SseServer))
    except httpx2.HTTPError as exc:
        raise UpstreamUnavailable(server, f"login failed: {url} did not answer: {exc}") from None
    if answered in (401, 403):
        raise UpstreamUnavailable(server, f"login failed: {url} still answers {answered} with the new token")
    if provider.context.oauth_metadata is not None:
        store.update(
            oauth_metadata=provider.context.oauth_metadata.model_dump(mode="json", exclude_none=True)
        )
    if store.fresh or store.tokens() is None:
        raise UpstreamUnavailable(
            server, f"{url} did not ask for a login (it answered {answered} without one)"
        )
    logger.info("logged in to upstream %s at %s", server, url)
