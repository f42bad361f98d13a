"""The gateway's own credentials for its upstreams: secrets and OAuth client-credentials tokens.

Owns: the `[gateway] secrets_file` (dotenv `NAME=value` lines, read once, the
environment winning over it) that `${NAME}` in an upstream's `env`, `headers`
and `oauth` resolve against, and `ClientCredentials`, the httpx auth that gives
an HTTP upstream a token from its own authorization server through Authlib's
OAuth 2 client, cached and replaced `refresh_before` seconds ahead of expiry
(and once more on a 401).

These are always mcpgw's credentials: nothing here ever sees a downstream
caller's token, so a caller's token cannot be passed through to an upstream.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import ChainMap
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx2

from mcpgw.config import GatewaySettings, UpstreamOAuth, expand
from mcpgw.errors import ConfigError, UpstreamUnavailable

logger = logging.getLogger("mcpgw.credentials")


def secrets_path(settings: GatewaySettings) -> Path | None:
    """Where `[gateway] secrets_file` points, `${VAR}` and `~` expanded (None without one)."""
    if settings.secrets_file is None:
        return None
    return Path(expand(settings.secrets_file, key="gateway.secrets_file")).expanduser()


def load_secrets(settings: GatewaySettings) -> dict[str, str]:
    """The secrets file's values (empty without one); a missing or unreadable file is a `ConfigError`."""
    path = secrets_path(settings)
    if path is None:
        return {}
    from dotenv import dotenv_values

    key = "gateway.secrets_file"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        message = f"{path} is readable by other users (chmod 600 it)"
        if settings.mode == "production":
            raise ConfigError(f"mode is production, refusing secrets: {message}", key=key)
        logger.warning("SECURITY: %s", message)
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", key=key) from None
    return {name: value for name, value in values.items() if value is not None}


def environ(secrets: Mapping[str, str]) -> Mapping[str, str]:
    """What `${NAME}` resolves against: the environment first, then the secrets file."""
    return ChainMap(dict(os.environ), dict(secrets))


class ClientCredentials(httpx2.Auth):
    """Bearer tokens for one upstream from the OAuth 2.1 client-credentials grant."""

    def __init__(self, server: str, oauth: UpstreamOAuth, env: Mapping[str, str]) -> None:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        def value(field: str, text: str) -> str:
            return expand(text, key=f"servers.{server}.oauth.{field}", environ=env)

        self.server = server
        if oauth.token_url is None:
            raise ValueError(
                "ClientCredentials needs a token_url (else see grants.discovered_client_credentials)"
            )
        self.token_url = value("token_url", oauth.token_url)
        self.refresh_before = oauth.refresh_before
        self.extra: dict[str, str] = {}
        if oauth.resource:
            self.extra["resource"] = value("resource", oauth.resource)
        if oauth.audience:
            self.extra["audience"] = value("audience", oauth.audience)
        self._client = AsyncOAuth2Client(
            client_id=value("client_id", oauth.client_id),
            client_secret=value("client_secret", oauth.client_secret or ""),  # set: see UpstreamOAuth
            scope=value("scope", oauth.scope) if oauth.scope else None,
            token_endpoint_auth_method=oauth.auth_method,
            leeway=int(oauth.refresh_before),
            timeout=30.0,
        )
        self._lock = anyio.Lock()
        self.fetched = 0

    async def token(self, *, renew: bool = False) -> str:
        """A token valid for at least `refresh_before` more seconds (a new one when `renew`)."""
        async with self._lock:
            current: Any = self._client.token
            if renew or not current or current.is_expired(leeway=self._leeway(current)):
                await self._fetch()
            return str(self._client.token["access_token"])

    def _leeway(self, token: Any) -> int:
        """`refresh_before`, at most half the lifetime: short-lived tokens are not refetched per call."""
        lifetime = token.get("expires_in")
        if isinstance(lifetime, int | float) and lifetime > 0:
            return int(min(self.refresh_before, lifetime / 2))
        return int(self.refresh_before)

    async def _fetch(self) -> None:
        from authlib.common.errors import AuthlibBaseError

        try:
            await self._client.fetch_token(self.token_url, grant_type="client_credentials", **self.extra)
        except (AuthlibBaseError, httpx2.HTTPError, ValueError, KeyError) as exc:
            raise UpstreamUnavailable(
                self.server, f"OAuth token request to {self.token_url} failed: {exc}"
            ) from exc
        self.fetched += 1
        logger.info("upstream %s: new OAuth access token from %s", self.server, self.token_url)

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers["Authorization"] = f"Bearer {await self.token()}"
        response = yield request
        if response.status_code == 401:
            # Revoked or expired early at the issuer: one fresh token, one retry.
            request.headers["Authorization"] = f"Bearer {await self.token(renew=True)}"
            yield request

    async def aclose(self) -> None:
        await self._client.aclose()
