"""mcpgw as an OAuth 2.1 resource server on its HTTP transport, and the HTTP exposure policy.

Owns: which tokens an endpoint accepts (one checked by `tokens.JWTVerifier`,
with an audience naming this endpoint, so a token for one persona's URL is no
token for another's), the RFC 9728 protected resource metadata for `/mcp` and
every `/personas/<name>/mcp`, the 401/403 answers with their `WWW-Authenticate`
challenges, the 503 answer when the issuer's keys cannot be fetched (the
server's trouble, not the client's token), which persona a token grants, the
principal recorded in the audit log, the refusals' rows and log lines (folded
per reason, endpoint and peer: one per interval with a count, the first written
before it is answered), CORS, and what `mode = "production"` refuses before
listening.

Built on the SDK's and fastmcp's auth pieces rather than beside them: the
verifier is a fastmcp `TokenVerifier`, tokens reach it through the SDK's
`BearerAuthBackend`, and 401/403 come from fastmcp's `RequireAuthMiddleware`
(missing and invalid tokens told apart as RFC 6750 asks).

A caller's token never leaves this module's checks: upstream sessions are
opened with the gateway's own credentials (see `credentials`), and requests are
relayed as MCP messages, never as HTTP requests with the caller's headers.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import anyio
from fastmcp.server.auth.middleware import RequireAuthMiddleware
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend
from mcp.server.auth.routes import cors_middleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpgw import _compat
from mcpgw.audit import AuditLog, Folds, Kind, Outcome, Step, shown
from mcpgw.config import AuthSettings, Registry
from mcpgw.errors import ConfigError
from mcpgw.observe.metrics import Metrics
from mcpgw.server import tokens
from mcpgw.server.hostcheck import is_loopback
from mcpgw.server.tokens import JWTVerifier, KeysUnavailable, TokenRejected, brief, claim_words

logger = logging.getLogger("mcpgw.auth")

WELL_KNOWN = "/.well-known/oauth-protected-resource"
PERSONA_PARAM = "persona"


# --- personas ----------------------------------------------------------------------------------


def granted_personas(settings: AuthSettings, claims: dict[str, Any], personas: Iterable[str]) -> list[str]:
    """The personas a token's claim names (after prefix and map), among those configured."""
    if settings.persona_claim is None:
        return []
    values = claim_words(claims.get(settings.persona_claim)) or []
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


def endpoint_audiences(settings: AuthSettings, persona: str | None) -> frozenset[str]:
    """The `aud` values that count on one endpoint (`/mcp` under None): the configured `audience`,
    else the gateway's own (`public_url`, its `/mcp`) and this endpoint's URL, never another's."""
    if settings.audience:
        return frozenset(settings.audience)
    base = settings.public_url.rstrip("/")
    own = {base, f"{base}/mcp"}
    if persona is not None:
        own.add(f"{base}/personas/{persona}/mcp")
    return frozenset(own)


def _bearer(scope: Scope) -> bool:
    return any(k == b"authorization" and v[:7].lower() == b"bearer " for k, v in scope.get("headers", []))


def peer(scope: Scope) -> str:
    """Where a request came from, as refusals are folded: the address, an IPv6 one by its /64."""
    client = scope.get("client")
    host = str(client[0]) if client else "-"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Guard:
    """In front of an MCP endpoint: 401 without a valid token, 403 short of scopes or persona.

    On success the request's `persona` path parameter is the one the token
    grants, so `/mcp` serves the token's persona and `/personas/<name>/mcp`
    serves `<name>` only if the token grants it. A token must be issued for the
    endpoint it is used on (`endpoint_audiences`). Every refusal is recorded
    before it is answered, folded with refusals like it (`_denied`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: AuthSettings,
        registry: Registry,
        audit: AuditLog | None = None,
        folds: Folds | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.settings = settings
        self.registry = registry
        self.audit = audit
        self.folds = folds or Folds()
        """Refusals folded per (reason, endpoint, peer, principal): shared by the endpoints of an app."""
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
        self._audiences = {persona: endpoint_audiences(settings, persona) for persona in endpoints}
        self._denials = {persona: self._denial(persona) for persona in endpoints}
        """The 403 for a token that does not grant the persona asked for."""

    def metadata_url(self, persona: str | None) -> AnyHttpUrl:
        path = "/mcp" if persona is None else f"/personas/{persona}/mcp"
        return AnyHttpUrl(f"{self.base}{WELL_KNOWN}{path}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        requested = scope.get("path_params", {}).get(PERSONA_PARAM)
        check = self._checks.get(requested, self._checks[None])
        outage = tokens.unavailable.get() if _bearer(scope) else None
        if outage is not None and not isinstance(scope.get("user"), AuthenticatedUser):
            await self._unavailable(scope, receive, send, outage)
            return
        self._check_audience(scope, requested)
        refusal = self._refusal(scope)
        if refusal is not None:
            reason, category, label = refusal
            await self._denied(scope, reason, category, label=label)
        await check(scope, receive, send)

    def _check_audience(self, scope: Scope, requested: str | None) -> None:
        """Unauthenticate a token issued for another endpoint (another persona's URL): the check
        that follows then answers 401 invalid_token, as for any token not issued for this one."""
        user = scope.get("user")
        if not isinstance(user, AuthenticatedUser):
            return
        accepted = self._audiences.get(requested, self._audiences[None])
        audience = (user.access_token.claims or {}).get("aud")
        named = [audience] if isinstance(audience, str) else list(audience or [])
        if accepted.intersection(str(a) for a in named):
            return
        scope["user"], scope["auth"] = UnauthenticatedUser(), AuthCredentials()
        tokens.rejection.set(
            TokenRejected(
                f"audience {brief(named, limit=200)} is another endpoint's, not {sorted(accepted)}",
                category="audience of another endpoint",
            )
        )

    def _denial(self, persona: str | None) -> RequireAuthMiddleware:
        return RequireAuthMiddleware(self.app, [], self.metadata_url(persona))

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send, outage: KeysUnavailable) -> None:
        """503 and `Retry-After`: the token may be good, the gateway cannot check it now.

        The SDK's backend turns every refused token into "no user", which fastmcp's
        `RequireAuthMiddleware` answers 401 invalid_token; that would tell the client to get a
        new token for the issuer's outage, so this case is answered here, before it.
        """
        retry_after = max(1, math.ceil(outage.retry_after))
        await self._denied(
            scope,
            f"the issuer's signing keys could not be fetched ({outage}); answered 503",
            outage.category,
            label="keys_unavailable",
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

    def _refusal(self, scope: Scope) -> tuple[str, str, str] | None:
        """Why the token and scope checks will refuse this request (the reason, its fold category:
        the same without what the client chose, and its metrics label); None when they pass it."""
        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            missing = sorted(set(self.settings.required_scopes) - set(user.access_token.scopes))
            if not missing:
                return None
            reason = f"token lacks the required scopes {missing}"
            return reason, reason, "insufficient_scope"
        if not _bearer(scope):
            return "no bearer token", "no bearer token", "no_token"
        rejected = tokens.rejection.get()
        if rejected is None:
            return "invalid token: refused by the verifier", "invalid token", "invalid_token"
        return f"invalid token: {rejected}", f"invalid token: {rejected.category}", "invalid_token"

    async def _denied(
        self, scope: Scope, reason: str, category: str, *, label: str, outcome: Outcome = Outcome.DENIED
    ) -> None:
        """One refusal, before it is answered. The first of its kind (category, endpoint, peer,
        principal) in an interval is logged and written as a row, and waited for; the others of
        the interval only add to that row's count. Every one is counted in the metrics (`label`:
        one of `observe.metrics.REASONS`)."""
        if self.metrics is not None:
            self.metrics.refused(label)
        requested = scope.get("path_params", {}).get(PERSONA_PARAM)
        endpoint = requested if requested is None or requested in self.registry.personas else "?"
        source, who = peer(scope), principal(scope)
        fold = self.folds.add((category, endpoint, source, who), detail={"peer": source})
        if not fold.new:
            if self.audit is not None:
                self.audit.recount(fold.request_id, fold.result())
            return
        method = f"{scope.get('method', '')} {scope.get('path', '')}"
        if fold.overflow:
            reason = (
                f"refusals of more than {self.folds.max_keys} kinds within {self.folds.interval:g}s, "
                f"counted together from here; the first: {reason}"
            )
        before = (
            f" ({fold.previous} like it in the {self.folds.interval:g}s before)" if fold.previous > 1 else ""
        )
        logger.info(
            "refused %s from %s (%s): %s%s", shown(method, 200), source, who, shown(reason, 500), before
        )
        if self.audit is None:
            return
        step = Step(
            kind=Kind.AUTH,
            method=method,
            persona=requested,
            principal=who,
            request_id=fold.request_id,
            outcome=outcome,
            error=reason,
            result=fold.result(),
        )
        await self.audit.commit(step)

    async def _persona_gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.settings.persona_claim is None:
            await self._while_valid(scope, receive, send)
            return
        user = scope["user"]
        assert isinstance(user, AuthenticatedUser)
        claims = user.access_token.claims or {}
        granted = granted_personas(self.settings, claims, self.registry.personas)
        requested = scope.get("path_params", {}).get(PERSONA_PARAM)
        problem: str | None = None
        category = "persona not granted"
        if requested is not None:
            if requested not in granted:
                problem = f"the token does not grant persona {brief(requested)}"
        elif len(granted) == 1:
            scope["path_params"] = {**scope.get("path_params", {}), PERSONA_PARAM: granted[0]}
        elif not granted:
            problem = f"the token's {self.settings.persona_claim!r} claim names no configured persona"
        else:
            problem = f"the token grants personas {granted}; use /personas/<name>/mcp to pick one"
            category = "several personas granted"
        if problem is not None:
            await self._denied(scope, problem, category, label="persona_not_granted")
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
            if self.metrics is not None:
                self.metrics.refused("expired")
            if self.audit is not None:
                await self.audit.commit(
                    Step(
                        kind=Kind.AUTH,
                        method=f"{scope.get('method', '')} {scope.get('path', '')}",
                        persona=scope.get("path_params", {}).get(PERSONA_PARAM),
                        principal=principal(scope),
                        outcome=Outcome.EXPIRED,
                        error="token expired; its open event stream was closed",
                    )
                )


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
    app: Starlette,
    registry: Registry,
    *,
    mcp_path: str,
    persona_path: str,
    audit: AuditLog | None = None,
    metrics: Metrics | None = None,
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
        folds = Folds()  # one set for both endpoints: refusals are counted per endpoint within it
        for route in app.router.routes:
            if isinstance(route, Route) and route.path in (mcp_path, persona_path):
                route.app = Guard(
                    route.app, settings=settings, registry=registry, audit=audit, folds=folds, metrics=metrics
                )
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
