"""mcpgw as an OAuth 2.1 resource server on its HTTP transport, and the HTTP exposure policy.

Owns: checking bearer JWTs (signature against the issuer's JWKS, fetched and
cached and refetched on an unknown key id at most every
`jwks_min_refresh_seconds`; issuer; audience; expiry with clock skew; an
explicit list of public-key algorithms), the RFC 9728 protected resource
metadata for `/mcp` and every `/personas/<name>/mcp`, the 401/403 answers with
their `WWW-Authenticate` challenges, the 503 answer when the issuer's keys
cannot be fetched (the server's trouble, not the client's token), which persona a token grants, the
principal recorded in the audit log, CORS, and what `mode = "production"`
refuses before listening.

Built on the SDK's and fastmcp's auth pieces rather than beside them: the
verifier is a fastmcp `TokenVerifier`, tokens reach it through the SDK's
`BearerAuthBackend`, and 401/403 come from fastmcp's `RequireAuthMiddleware`
(missing and invalid tokens told apart as RFC 6750 asks). Our own verifier
because fastmcp's `JWTVerifier` accepts one algorithm, refuses a token short of
scopes as invalid (401, where the spec wants 403 insufficient_scope) and cannot
bound refetches per unknown key id and cache TTL separately. The JOSE work is
done by joserfc, the Authlib project's JOSE library (`authlib.jose` is
deprecated in its favour and is to be removed in Authlib 2.0).

A caller's token never leaves this module's checks: upstream sessions are
opened with the gateway's own credentials (see `credentials`), and requests are
relayed as MCP messages, never as HTTP requests with the caller's headers.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import anyio
import httpx2
from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.auth.middleware import RequireAuthMiddleware
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jws import extract_compact
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend
from mcp.server.auth.routes import cors_middleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpgw import _compat
from mcpgw.audit import AuditLog, Kind, Outcome, Step
from mcpgw.config import AuthSettings, Registry
from mcpgw.errors import ConfigError
from mcpgw.server.hostcheck import is_loopback

logger = logging.getLogger("mcpgw.auth")

WELL_KNOWN = "/.well-known/oauth-protected-resource"
_PASSED = "mcpgw.auth.passed"
"""Set in the ASGI scope once token and scopes are accepted (refusals before it are audited after)."""
PERSONA_PARAM = "persona"
_KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class TokenRejected(Exception):
    """Why one token was refused; logged, never sent (the client sees 401 invalid_token, or 503)."""


class KeysUnavailable(TokenRejected):
    """The issuer's JWKS could not be fetched and no cached key can check the token (answered 503)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds until the JWKS may be fetched again."""


_rejection: contextvars.ContextVar[str | None] = contextvars.ContextVar("mcpgw_rejection", default=None)
"""Why this request's token was refused, for its audit row (the SDK's backend only sees None)."""
_unavailable: contextvars.ContextVar[KeysUnavailable | None] = contextvars.ContextVar(
    "mcpgw_keys_unavailable", default=None
)
"""Set when this request's token could not be checked at all: `Guard` answers 503, not 401."""


# --- keys --------------------------------------------------------------------------------------


class JWKSCache:
    """The issuer's signing keys: fetched once, kept `cache_seconds`, refetched on an unknown key id.

    Every fetch, failed or not, is at least `min_refresh` seconds after the
    previous one, so forged key ids or a JWKS outage cannot turn requests into
    fetches; a key rotated in by the issuer is picked up on the first token
    that names it.
    """

    def __init__(self, url: str, *, cache_seconds: float, min_refresh: float) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.min_refresh = min_refresh
        self._keys: KeySet | None = None
        self._fetched_at = -float("inf")
        self._tried_at = -float("inf")
        self._error: str | None = None
        self._lock = anyio.Lock()

    def _lookup(self, kid: str | None) -> Key | None:
        if self._keys is None or time.monotonic() - self._fetched_at > self.cache_seconds:
            return None
        keys = list(self._keys)
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.kid == kid), None)

    async def key(self, kid: str | None) -> Key:
        if (found := self._lookup(kid)) is not None:
            return found
        async with self._lock:
            if (found := self._lookup(kid)) is not None:
                return found
            if time.monotonic() - self._tried_at >= self.min_refresh:
                await self._fetch()
            elif self._error is None:
                raise TokenRejected(
                    f"unknown key id {kid!r} (JWKS refetched less than {self.min_refresh}s ago)"
                )
        if self._error is not None:
            wait = self.min_refresh - (time.monotonic() - self._tried_at)
            raise KeysUnavailable(f"JWKS unavailable: {self._error}", retry_after=wait)
        if (found := self._lookup(kid)) is not None:
            return found
        if kid is None:
            raise TokenRejected("the token names no key id and the JWKS holds more than one key")
        raise TokenRejected(f"unknown key id {kid!r}")

    async def _fetch(self) -> None:
        self._tried_at = time.monotonic()
        try:
            async with httpx2.AsyncClient(timeout=10.0) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
        except (httpx2.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
            logger.error("fetching the JWKS from %s failed: %s", self.url, exc)
            self._error = str(exc) or type(exc).__name__
            return
        self._keys, self._fetched_at, self._error = keys, time.monotonic(), None


# --- tokens ------------------------------------------------------------------------------------


def resource_urls(settings: AuthSettings, personas: Iterable[str]) -> list[str]:
    """mcpgw's resource identifiers: the base URL, `/mcp` and each persona's endpoint."""
    base = settings.public_url.rstrip("/")
    return [base, f"{base}/mcp", *(f"{base}/personas/{name}/mcp" for name in personas)]


class JWTVerifier(TokenVerifier):
    """A fastmcp token verifier for JWTs from one issuer, checked against its JWKS."""

    def __init__(self, settings: AuthSettings, *, personas: Iterable[str] = ()) -> None:
        super().__init__(base_url=settings.public_url, required_scopes=list(settings.required_scopes))
        self.settings = settings
        self.audiences = list(settings.audience) or resource_urls(settings, personas)
        self.keys = JWKSCache(
            settings.jwks_url,
            cache_seconds=settings.jwks_cache_seconds,
            min_refresh=settings.jwks_min_refresh_seconds,
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.check(token)
        except TokenRejected as exc:
            logger.info("bearer token refused: %s", exc)
            _rejection.set(str(exc))
            if isinstance(exc, KeysUnavailable):
                _unavailable.set(exc)
            return None

    async def check(self, token: str) -> AccessToken:
        """The token's access, or `TokenRejected` saying why not."""
        settings = self.settings
        try:
            header = extract_compact(token.encode()).headers()
        except (JoseError, ValueError) as exc:
            raise TokenRejected("not a signed JWT") from exc
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise TokenRejected(f"algorithm {algorithm!r} is not among {settings.algorithms}")
        key = await self.keys.key(header.get("kid"))
        if key.key_type != _KEY_TYPE.get(str(algorithm)[:2]):
            raise TokenRejected(f"a {key.key_type} key cannot verify {algorithm}")
        try:
            claims = jwt.decode(token, key, algorithms=[str(algorithm)]).claims
            jwt.JWTClaimsRegistry(
                leeway=int(settings.clock_skew),
                iss={"essential": True, "value": settings.issuer},
                aud={"essential": True, "values": self.audiences},
                exp={"essential": True},
            ).validate(claims)
        except JoseError as exc:
            raise TokenRejected(f"{type(exc).__name__}: {exc}") from exc
        scopes = _scopes(claims)
        client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub") or "unknown"
        return AccessToken(
            token=token,
            client_id=str(client_id),
            scopes=scopes,
            # The SDK's backend compares this with its own clock; the skew was granted above.
            expires_at=int(claims["exp"] + settings.clock_skew),
            subject=str(claims["sub"]) if claims.get("sub") is not None else None,
            claims=claims,
        )


def _scopes(claims: dict[str, Any]) -> list[str]:
    for name in ("scope", "scp"):
        words = _claim_words(claims.get(name))
        if words is not None:
            return words
    return []


def _claim_words(value: Any) -> list[str] | None:
    """A claim that lists names (scopes, groups): a space-separated string or an array; None if neither."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


# --- personas ----------------------------------------------------------------------------------


def granted_personas(settings: AuthSettings, claims: dict[str, Any], personas: Iterable[str]) -> list[str]:
    """The personas a token's claim names (after prefix and map), among those configured."""
    if settings.persona_claim is None:
        return []
    values = _claim_words(claims.get(settings.persona_claim)) or []
    known = set(personas)
    granted: list[str] = []
    for value in values:
        if settings.persona_prefix:
            if not value.startswith(settings.persona_prefix):
                continue
            value = value.removeprefix(settings.persona_prefix)
        name = settings.persona_map.get(value, value)
        if name in known and name not in granted:
            granted.append(name)
    return granted


def principal(scope: Scope) -> str | None:
    """Who made a request, for the audit log: `sub=... client_id=...`; None without a token."""
    user = scope.get("user")
    if not isinstance(user, AuthenticatedUser):
        return None
    token = user.access_token
    return f"sub={token.subject} client_id={token.client_id}"


# --- HTTP --------------------------------------------------------------------------------------


class Guard:
    """In front of an MCP endpoint: 401 without a valid token, 403 short of scopes or persona.

    On success the request's `persona` path parameter is the one the token
    grants, so `/mcp` serves the token's persona and `/personas/<name>/mcp`
    serves `<name>` only if the token grants it.
    """

    def __init__(
        self, app: ASGIApp, *, settings: AuthSettings, registry: Registry, audit: AuditLog | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.registry = registry
        self.audit = audit
        self.base = settings.public_url.rstrip("/")
        # Built once per endpoint (`/mcp` under None, each persona's under its name): what a
        # refusal's challenge carries is the endpoint's own metadata URL.
        endpoints: list[str | None] = [None, *registry.personas]
        self._checks = {
            persona: RequireAuthMiddleware(
                self._persona_gate, list(settings.required_scopes), self.metadata_url(persona)
            )
            for persona in endpoints
        }
        """Token and scope checks; an unknown persona's path gets `/mcp`'s (the endpoint answers 404)."""
        self._denials = {persona: self._denial(persona) for persona in endpoints}
        """The 403 for a token that does not grant the persona asked for."""

    def metadata_url(self, persona: str | None) -> AnyHttpUrl:
        path = "/mcp" if persona is None else f"/personas/{persona}/mcp"
        return AnyHttpUrl(f"{self.base}{WELL_KNOWN}{path}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        requested = scope.get("path_params", {}).get(PERSONA_PARAM)
        check = self._checks.get(requested, self._checks[None])
        outage = _unavailable.get()
        if outage is not None and not isinstance(scope.get("user"), AuthenticatedUser):
            await self._unavailable(scope, receive, send, outage)
            return
        await check(scope, receive, send)
        if not scope.get(_PASSED):
            self._denied(scope, self._why_refused(scope))

    def _denial(self, persona: str | None) -> RequireAuthMiddleware:
        return RequireAuthMiddleware(self.app, [], self.metadata_url(persona))

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send, outage: KeysUnavailable) -> None:
        """503 and `Retry-After`: the token may be good, the gateway cannot check it now.

        The SDK's backend turns every refused token into "no user", which fastmcp's
        `RequireAuthMiddleware` answers 401 invalid_token; that would tell the client to get a
        new token for the issuer's outage, so this case is answered here, before it.
        """
        retry_after = max(1, math.ceil(outage.retry_after))
        self._denied(
            scope,
            f"the issuer's signing keys could not be fetched ({outage}); answered 503",
            outcome=Outcome.ERROR,
        )
        response = JSONResponse(
            {
                "error": "temporarily_unavailable",
                "error_description": "the gateway cannot check tokens now: the issuer's signing keys "
                f"could not be fetched; retry in {retry_after}s",
            },
            status_code=503,
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)

    def _why_refused(self, scope: Scope) -> str:
        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            missing = sorted(set(self.settings.required_scopes) - set(user.access_token.scopes))
            return f"token lacks the required scopes {missing}"
        if not any(
            k == b"authorization" and v[:7].lower() == b"bearer " for k, v in scope.get("headers", [])
        ):
            return "no bearer token"
        return f"invalid token: {_rejection.get() or 'refused by the verifier'}"

    def _denied(self, scope: Scope, reason: str, *, outcome: Outcome = Outcome.DENIED) -> None:
        """One audit row per refused request: who (if known), where, and why."""
        if self.audit is None:
            return
        step = Step(
            kind=Kind.AUTH,
            method=f"{scope.get('method', '')} {scope.get('path', '')}",
            persona=scope.get("path_params", {}).get(PERSONA_PARAM),
            principal=principal(scope),
            outcome=outcome,
            error=reason,
        )
        self.audit.record_step(step)

    async def _persona_gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PASSED] = True
        if self.settings.persona_claim is None:
            await self._while_valid(scope, receive, send)
            return
        user = scope["user"]
        assert isinstance(user, AuthenticatedUser)
        claims = user.access_token.claims or {}
        granted = granted_personas(self.settings, claims, self.registry.personas)
        requested = scope.get("path_params", {}).get(PERSONA_PARAM)
        problem: str | None = None
        if requested is not None:
            if requested not in granted:
                problem = f"the token does not grant persona {requested!r}"
        elif len(granted) == 1:
            scope["path_params"] = {**scope.get("path_params", {}), PERSONA_PARAM: granted[0]}
        elif not granted:
            problem = f"the token's {self.settings.persona_claim!r} claim names no configured persona"
        else:
            problem = f"the token grants personas {granted}; use /personas/<name>/mcp to pick one"
        if problem is not None:
            logger.info("refused %s: %s", principal(scope), problem)
            self._denied(scope, problem)
            # A persona not configured is refused naming its own path, as it was asked for.
            deny = self._denials.get(requested) or self._denial(requested)
            await _compat.send_auth_error(deny, send, 403, "insufficient_scope", problem)
            return
        await self._while_valid(scope, receive, send)

    async def _while_valid(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request; an event stream it opens is closed when the token expires.

        A token is checked once, when the request arrives, but an SSE stream (a handshake-era
        GET stream, a 2026-07-28 listen stream, a long call's answer) can outlive it by hours.
        Once the stream has started, its end is set to the token's expiry (with the clock
        skew): the client must come back with a fresh token, and a resumable stream loses
        nothing (`Last-Event-ID`). Plain JSON answers are not cut.
        """
        user = scope.get("user")
        expires = user.access_token.expires_at if isinstance(user, AuthenticatedUser) else None
        if expires is None:
            await self.app(scope, receive, send)
            return
        with anyio.CancelScope() as stream:

            async def watch(message: Any) -> None:
                if message["type"] == "http.response.start" and _is_event_stream(message):
                    stream.deadline = anyio.current_time() + max(0.0, expires - time.time())
                await send(message)

            await self.app(scope, receive, watch)
        if stream.cancelled_caught:
            logger.info("closed the event stream of %s: its token expired", principal(scope))
            self._denied(scope, "token expired; its open event stream was closed", outcome=Outcome.EXPIRED)


def _is_event_stream(start: Any) -> bool:
    return any(
        k.lower() == b"content-type" and v.split(b";")[0].strip() == b"text/event-stream"
        for k, v in start.get("headers", ())
    )


def _metadata_route(path: str, metadata: ProtectedResourceMetadata) -> Route:
    handler = ProtectedResourceMetadataHandler(metadata)
    return Route(
        path, endpoint=cors_middleware(handler.handle, ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"]
    )


def install(
    app: Starlette, registry: Registry, *, mcp_path: str, persona_path: str, audit: AuditLog | None = None
) -> JWTVerifier | None:
    """Put `[auth]` in front of the MCP endpoints of `app` (none without `[auth]`) and add CORS."""
    settings = registry.auth
    verifier: JWTVerifier | None = None
    if settings is not None:
        verifier = JWTVerifier(settings, personas=registry.personas)
        base = settings.public_url.rstrip("/")
        scopes = list(settings.required_scopes) or None

        def metadata(resource: str) -> ProtectedResourceMetadata:
            # Strings, not AnyHttpUrl: the model keeps an empty path as given (RFC 9728 compares exactly).
            return ProtectedResourceMetadata.model_validate(
                {
                    "resource": resource,
                    "authorization_servers": [settings.issuer],
                    "scopes_supported": scopes,
                    "resource_name": registry.gateway.name,
                }
            )

        routes = [
            _metadata_route(WELL_KNOWN, metadata(base)),
            _metadata_route(f"{WELL_KNOWN}{mcp_path}", metadata(f"{base}{mcp_path}")),
        ]

        persona_handlers = {
            name: ProtectedResourceMetadataHandler(metadata(f"{base}/personas/{name}/mcp"))
            for name in registry.personas
        }

        async def persona_metadata(request: Request) -> Response:
            handler = persona_handlers.get(request.path_params[PERSONA_PARAM])
            if handler is None:
                return Response(status_code=404)
            return await handler.handle(request)

        routes.append(
            Route(
                f"{WELL_KNOWN}{persona_path}",
                endpoint=cors_middleware(persona_metadata, ["GET", "OPTIONS"]),
                methods=["GET", "OPTIONS"],
            )
        )
        for route in app.router.routes:
            if isinstance(route, Route) and route.path in (mcp_path, persona_path):
                route.app = Guard(route.app, settings=settings, registry=registry, audit=audit)
        app.router.routes[:0] = routes
        app.add_middleware(AuthContextMiddleware)
        app.add_middleware(AuthenticationMiddleware, backend=BearerAuthBackend(verifier))
    if registry.gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(registry.gateway.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "*"],
            expose_headers=["Mcp-Session-Id", "WWW-Authenticate"],
        )
    return verifier


# --- modes -------------------------------------------------------------------------------------


def check_exposure(registry: Registry, *, host: str) -> list[str]:
    """What is unsafe about serving HTTP on `host`: refused in production, warnings in prototype."""
    problems: list[str] = []
    if registry.auth is None and not is_loopback(host):
        problems.append(
            f"listening on {host} without [auth]: anyone who can reach it can call every upstream "
            "(add an [auth] section, or listen on 127.0.0.1)"
        )
    if "*" in registry.gateway.cors_origins:
        problems.append(
            "[gateway] cors_origins allows '*': any web page may call the gateway from a browser "
            "(list the origins instead)"
        )
    if registry.gateway.mode == "production" and problems:
        raise ConfigError("mode is production, refusing to serve: " + "; ".join(problems), key="gateway.mode")
    for problem in problems:
        logger.warning("SECURITY: %s", problem)
    return problems
