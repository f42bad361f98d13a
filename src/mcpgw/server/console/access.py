"""Who may use the console, and proof that a form was posted by the console's own page.

Owns: the console's access rule, its browser sessions and its CSRF defence.

- Without `[auth]`: only over loopback (the request's `Host` names a loopback address and the
  peer is one), and never in production mode, where the console is off until `[auth]` exists.
- With `[auth]`: a bearer JWT checked as the MCP endpoints check it (issuer, keys, expiry,
  `required_scopes`), issued for the gateway (`public_url`, its `/mcp` or `/admin`), and
  carrying the `[admin] scope`. A browser presents it once, in the login form, and gets an
  HttpOnly, SameSite=Strict session cookie scoped to `/admin` that ends with the token (or
  `[admin] session_minutes`, if sooner); scripts may send `Authorization: Bearer` instead.
- Every POST (login included) must come from this console's own origin: a `Sec-Fetch-Site`
  other than `same-origin`, or an `Origin` other than the console's, is refused; and every
  action's form carries a token bound to the session (or principal), made with a per-process
  key. Sites on other loopback ports are "same-site" to a browser, so SameSite alone would not
  stop them: the origin check does.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.requests import Request

from mcpgw.config import AuthSettings
from mcpgw.server.hostcheck import is_loopback
from mcpgw.server.tokens import JWTVerifier, KeysUnavailable, TokenRejected

if TYPE_CHECKING:
    from mcpgw.server.console.context import Console

logger = logging.getLogger("mcpgw.admin")

PREFIX = "/admin"
SESSION_COOKIE = "mcpgw_admin"
CSRF_FIELD = "csrf"
MAX_SESSIONS = 1024
LOCAL = "local (loopback, no [auth])"


class Refused(Exception):
    """A request the console does not serve: its status and the reason shown to the visitor."""

    def __init__(self, status: int, reason: str, *, login: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.login = login
        """Offer the login form (no token, or one that is no longer good)."""


@dataclass(frozen=True)
class Visitor:
    """Who is using the console, and the CSRF token their forms carry."""

    principal: str
    csrf: str


@dataclass
class _Session:
    principal: str
    expires: float
    csrf: str


def host_name(host_header: str) -> str:
    """The name part of a `Host` value (`[::1]:8765` -> `[::1]`, `a:1` -> `a`)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class ConsoleVerifier(JWTVerifier):
    """The MCP endpoints' verifier, with the console's own URL among the accepted audiences."""

    def __init__(self, settings: AuthSettings) -> None:
        super().__init__(settings)
        base = settings.public_url.rstrip("/")
        self.audiences = list(settings.audience) or [base, f"{base}/mcp", f"{base}{PREFIX}"]


class Access:
    """The console's gate: `visitor` for every request, `check_post` for every form, `login`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._sessions: dict[str, _Session] = {}
        self._verifier: tuple[AuthSettings, ConsoleVerifier] | None = None

    def _verify(self, settings: AuthSettings) -> ConsoleVerifier:
        # Rebuilt when a reload brings another [auth]; kept otherwise (it caches the issuer's keys).
        if self._verifier is None or self._verifier[0] != settings:
            self._verifier = (settings, ConsoleVerifier(settings))
        return self._verifier[1]

    def _csrf(self, bound_to: str) -> str:
        return hmac.new(self.console.key, f"csrf\0{bound_to}".encode(), hashlib.sha256).hexdigest()[:40]

    async def visitor(self, request: Request) -> Visitor:
        """Who this is, or `Refused`."""
        registry = self.console.registry
        if not registry.admin.enabled:
            raise Refused(404, "the console is off ([admin] enabled = false)")
        settings = registry.auth
        if settings is None:
            if registry.gateway.mode == "production":
                raise Refused(
                    403, "production mode: the console needs [auth] (an OAuth token with the admin scope)"
                )
            peer = request.client.host if request.client else ""
            if not (is_loopback(host_name(request.headers.get("host", ""))) and is_loopback(peer)):
                raise Refused(403, "without [auth] the console answers only on a loopback address")
            return Visitor(LOCAL, self._csrf(LOCAL))
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            principal, _ = await self.check_token(settings, header[7:].strip())
            return Visitor(principal, self._csrf(principal))
        session = self._sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None or session.expires <= time.time():
            raise Refused(401, "log in with a token that has the admin scope", login=True)
        return Visitor(session.principal, session.csrf)

    async def check_token(self, settings: AuthSettings, token: str) -> tuple[str, float | None]:
        """The principal and expiry of a token good for the console, or `Refused` (401 bad token,
        403 short of the scope)."""
        try:
            access = await self._verify(settings).check(token)
        except KeysUnavailable as exc:  # the token may well be good: the server's trouble, as on /mcp
            logger.warning("console: cannot check a token now: %s", exc)
            raise Refused(
                503, "the authorization server's signing keys cannot be fetched now; retry shortly"
            ) from None
        except TokenRejected as exc:
            logger.info("console: token refused: %s", exc)
            raise Refused(401, "the token is not valid for this gateway", login=True) from None
        needed = {*settings.required_scopes, self.console.registry.admin.scope}
        missing = sorted(needed - set(access.scopes))
        principal = f"sub={access.subject} client_id={access.client_id}"
        if missing:
            logger.info("console: %s lacks the scopes %s", principal, missing)
            raise Refused(403, f"the token lacks the scope {' '.join(missing)}", login=True)
        return principal, float(access.expires_at) if access.expires_at is not None else None

    def check_post(self, request: Request, visitor: Visitor | None, form_csrf: str | None) -> None:
        """A POST must come from this console's page: its origin, and (but for login) its token."""
        problem = self.cross_site(request)
        if (
            problem is None
            and visitor is not None
            and not (form_csrf and hmac.compare_digest(form_csrf, visitor.csrf))
        ):
            problem = "the form's CSRF token is missing or not this session's"
        if problem is not None:
            raise Refused(403, f"refused a cross-site request: {problem}")

    def cross_site(self, request: Request) -> str | None:
        """Why a POST is not from this console's own origin (None: it is, or it is not a browser's)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"Sec-Fetch-Site is {site!r}"
        origin = request.headers.get("origin")
        if origin is None:
            return None  # not a browser (browsers send Origin on every POST): the CSRF token decides
        host = request.headers.get("host", "")
        accepted = {f"http://{host}", f"https://{host}"}
        auth = self.console.registry.auth
        if auth is not None:
            public = urlsplit(auth.public_url)
            accepted.add(f"{public.scheme}://{public.netloc}")
        if origin not in accepted:
            return f"Origin {origin[:100]!r} is not this console's"
        return None

    def open_session(self, principal: str, token_expires: float | None) -> tuple[str, float]:
        """A new session for `principal`: its cookie value and expiry (epoch seconds)."""
        now = time.time()
        for sid in [sid for sid, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        expires = now + self.console.registry.admin.session_minutes * 60
        if token_expires is not None:
            expires = min(expires, token_expires)
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = _Session(principal, expires, self._csrf(sid))
        return sid, expires

    def close_session(self, request: Request) -> None:
        self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def cookie_secure(self) -> bool:
        auth = self.console.registry.auth
        return auth is not None and auth.public_url.startswith("https:")
