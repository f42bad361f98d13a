"""Checking bearer JWTs for the HTTP transport: the issuer's signing keys and the token itself.

Owns: fetching the JWKS, how long a fetched key set is trusted (`jwks_cache_seconds`, or the
response's `Cache-Control: max-age` when shorter), refetching on an unknown key id, the floor
between any two fetches (`jwks_min_refresh_seconds`); the verifier (`JWTVerifier`: signature,
an explicit list of public-key algorithms, issuer, an audience among the gateway's resources,
expiry with clock skew); and the refusal types `TokenRejected` and `KeysUnavailable` with their
fold category (what the audit log and the gateway log group repeated refusals by: never a
value the caller chose, so varying one does not make new rows). Which endpoint a token may be
used on, and the HTTP answers, are `auth`'s.

A key set is used for its lifetime only: the first token checked after it is refetched
against the issuer's current keys, so a key the issuer removed stops working within that
lifetime (or `jwks_min_refresh_seconds`, when that is longer).

Our own verifier because fastmcp's `JWTVerifier` accepts one algorithm, refuses a token short
of scopes as invalid (401, where the spec wants 403 insufficient_scope) and cannot bound
refetches per unknown key id and cache TTL separately. The JOSE work is done by joserfc, the
Authlib project's JOSE library (`authlib.jose` is deprecated in its favour and is to be removed
in Authlib 2.0).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterable
from typing import Any

import anyio
import httpx2
from fastmcp.server.auth import AccessToken, TokenVerifier
from joserfc import jwt
from joserfc.errors import ClaimError, JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jws import extract_compact

from mcpgw.config import AuthSettings

logger = logging.getLogger("mcpgw.auth")


def brief(value: object, *, limit: int = 60) -> str:
    """A value from a token, quoted for a message: escaped (repr) and cut, whatever its size."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TokenRejected(Exception):
    """Why one token was refused; logged, never sent (the client sees 401 invalid_token, or 503).

    `category` says the same without anything the token chose (a key id, an algorithm name
    outside the registered ones), so repeated refusals fold into one audit row per interval.
    """

    def __init__(self, message: str, *, category: str | None = None) -> None:
        super().__init__(message)
        self.category = category or message


class KeysUnavailable(TokenRejected):
    """The issuer's JWKS could not be fetched and no cached key can check the token (answered 503)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, category="the issuer's signing keys could not be fetched")
        self.retry_after = retry_after
        """Seconds until the JWKS may be fetched again."""


def max_age(cache_control: str | None) -> float | None:
    """Seconds a response may be cached per its `Cache-Control` (0 for no-store/no-cache); None if unsaid."""
    found: float | None = None
    for directive in (cache_control or "").split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            try:
                found = max(0.0, float(int(value.strip().strip('"'))))
            except ValueError:
                continue
    return found


class JWKSCache:
    """The issuer's signing keys: fetched, trusted for their lifetime, refetched on an unknown key id.

    The lifetime is `cache_seconds`, or the JWKS response's `Cache-Control: max-age` when
    shorter. Past it, the next token checked refetches the set first, so a removed key stops
    working. Every fetch, failed or not, is at least `min_refresh` seconds after the previous
    one, so forged key ids or a JWKS outage cannot turn requests into fetches; until a fetch is
    allowed again, a key set past its lifetime is still used. A key rotated in by the issuer is
    picked up on the first token that names it. A failed fetch is not a reason to keep trusting
    keys past their lifetime: tokens are then answered 503 (`KeysUnavailable`).
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refresh: float,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.min_refresh = min_refresh
        self.transport = transport
        """Only for tests that serve the JWKS in memory; None: the network."""
        self.lifetime = cache_seconds
        """How long the current key set is trusted: `cache_seconds`, or the server's max-age if shorter."""
        self._keys: KeySet | None = None
        self._fetched_at = -float("inf")
        self._tried_at = -float("inf")
        self._error: str | None = None
        self._lock = anyio.Lock()

    def _fresh(self) -> bool:
        return self._keys is not None and time.monotonic() - self._fetched_at <= self.lifetime

    def _may_fetch(self) -> bool:
        return time.monotonic() - self._tried_at >= self.min_refresh

    def _lookup(self, kid: str | None) -> Key | None:
        if self._keys is None:
            return None
        keys = list(self._keys)
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.kid == kid), None)

    async def key(self, kid: str | None) -> Key:
        if self._fresh() and (found := self._lookup(kid)) is not None:
            return found
        async with self._lock:
            if self._fresh() and (found := self._lookup(kid)) is not None:
                return found  # fetched by another request while this one waited
            if self._may_fetch():
                await self._fetch()
            elif self._error is None and self._fresh():
                raise TokenRejected(
                    f"unknown key id {brief(kid)} (JWKS refetched less than {self.min_refresh}s ago)",
                    category="unknown key id",
                )
            # Else: past its lifetime, but too soon to refetch: the set is used until a fetch may be tried.
        if self._error is not None:
            wait = self.min_refresh - (time.monotonic() - self._tried_at)
            raise KeysUnavailable(f"JWKS unavailable: {self._error}", retry_after=wait)
        if (found := self._lookup(kid)) is not None:
            return found
        if kid is None:
            raise TokenRejected("the token names no key id and the JWKS holds more than one key")
        raise TokenRejected(f"unknown key id {brief(kid)}", category="unknown key id")

    async def _fetch(self) -> None:
        self._tried_at = time.monotonic()
        try:
            async with httpx2.AsyncClient(timeout=10.0, transport=self.transport) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
        except (httpx2.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
            logger.error("fetching the JWKS from %s failed: %s", self.url, exc)
            self._error = str(exc) or type(exc).__name__
            return
        said = max_age(response.headers.get("cache-control"))
        self.lifetime = self.cache_seconds if said is None else min(self.cache_seconds, said)
        self._keys, self._fetched_at, self._error = keys, time.monotonic(), None


_KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
JWS_ALGORITHMS = frozenset(
    {"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"ES256", "ES384", "ES512", "ES256K", "EdDSA", "Ed25519", "Ed448"}
)
"""The registered JWS algorithm names: a refusal's fold category names one of these, or none."""
_CHECKED_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat"})


rejection: contextvars.ContextVar[TokenRejected | None] = contextvars.ContextVar(
    "mcpgw_rejection", default=None
)
"""Why this request's token was refused, for its audit row (the SDK's backend only sees None)."""
unavailable: contextvars.ContextVar[KeysUnavailable | None] = contextvars.ContextVar(
    "mcpgw_keys_unavailable", default=None
)
"""Set when this request's token could not be checked at all: `auth.Guard` answers 503, not 401."""


# --- the verifier ------------------------------------------------------------------------------------


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
        # Cleared first: one task may serve several requests (an in-memory transport does).
        rejection.set(None)
        unavailable.set(None)
        try:
            return await self.check(token)
        except TokenRejected as exc:
            rejection.set(exc)  # logged by the `Guard`, folded with refusals like it
            if isinstance(exc, KeysUnavailable):
                unavailable.set(exc)
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
            named = (
                algorithm if isinstance(algorithm, str) and algorithm in JWS_ALGORITHMS else "unregistered"
            )
            raise TokenRejected(
                f"algorithm {brief(algorithm)} is not among {settings.algorithms}",
                category=f"algorithm {named} not allowed",
            )
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
            category = type(exc).__name__
            if isinstance(exc, ClaimError) and exc.claim in _CHECKED_CLAIMS:
                category += f" {exc.claim}"
            raise TokenRejected(f"{type(exc).__name__}: {exc}", category=category) from exc
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
        words = claim_words(claims.get(name))
        if words is not None:
            return words
    return []


def claim_words(value: Any) -> list[str] | None:
    """A claim that lists names (scopes, groups): a space-separated string or an array; None if neither."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return None
