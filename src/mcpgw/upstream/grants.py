"""The gateway's own OAuth grants with discovery: client credentials by secret or by signed JWT.

Owns: `discovered_client_credentials`, the httpx auth of `[servers.X.oauth]` without `token_url`:
the mcp SDK's `ClientCredentialsOAuthProvider` (a client secret) or `PrivateKeyJWTOAuthProvider`
(`private_key`: RFC 7523 client authentication, a JWT signed per token request), or the RFC 7523
jwt-bearer grant with a workload's own JWT (`assertion`, `assertion_file`: workload identity
federation; `_compat.jwt_bearer_provider`), which discover
the authorization server from the upstream's 401 (RFC 9728, RFC 8414), wrapped in `LoginAuth`.
(With `token_url`, `credentials.ClientCredentials` asks Authlib instead.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from mcpgw import _compat
from mcpgw.config import UpstreamOAuth, expand
from mcpgw.errors import UpstreamUnavailable
from mcpgw.upstream.login import LoginAuth

logger = logging.getLogger("mcpgw.login")


class _Memory:
    """The SDK's `TokenStorage` in memory: a client-credentials token is simply fetched again."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def discovered_client_credentials(
    server: str, oauth: UpstreamOAuth, url: str, environ: Mapping[str, str]
) -> LoginAuth:
    """`[servers.X.oauth]` without `token_url`: the SDK's client-credentials provider, which
    discovers the authorization server from the upstream's 401 (no early refresh: a new token is
    fetched at the next 401, there being no refresh token in this grant)."""
    import warnings

    from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

    def value(field: str, text: str) -> str:
        return expand(text, key=f"servers.{server}.oauth.{field}", environ=environ)

    issuer = value("issuer", oauth.issuer) if oauth.issuer else None
    if issuer is None:
        logger.warning(
            "SECURITY: upstream %s: [servers.%s.oauth] names no `issuer` (nor `token_url`): its client "
            "credential goes to whichever authorization server the upstream names",
            server,
            server,
        )
    scope = value("scope", oauth.scope) if oauth.scope else None
    provider: OAuthClientProvider
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's, for the missing issuer: said above
        if oauth.private_key is not None:
            from mcp.client.auth.extensions.client_credentials import (
                PrivateKeyJWTOAuthProvider,
                SignedJWTParameters,
            )

            client_id = value("client_id", oauth.client_id)
            signed = SignedJWTParameters(
                issuer=client_id,
                subject=client_id,
                signing_key=value("private_key", oauth.private_key),
                signing_algorithm=oauth.signing_algorithm,
            )
            provider = PrivateKeyJWTOAuthProvider(
                url,
                _Memory(),
                client_id=client_id,
                assertion_provider=signed.create_assertion_provider(),
                scope=scope,
                issuer=issuer,
            )
        elif oauth.assertion is not None or oauth.assertion_file is not None:
            provider = _compat.jwt_bearer_provider(
                url,
                _Memory(),
                client_id=value("client_id", oauth.client_id),
                assertion=_assertion(server, oauth, value),
                scope=scope,
                issuer=issuer,
            )
        else:
            provider = ClientCredentialsOAuthProvider(
                url,
                _Memory(),
                client_id=value("client_id", oauth.client_id),
                client_secret=value("client_secret", oauth.client_secret or ""),
                token_endpoint_auth_method=oauth.auth_method,
                scope=scope,
                issuer=issuer,
            )
    return LoginAuth(server, provider, authorize=True)


def _assertion(
    server: str, oauth: UpstreamOAuth, value: Callable[[str, str], str]
) -> Callable[[], Awaitable[str]]:
    """The workload's JWT for each token request: configured, or read from its file each time (a
    platform rotates a projected token in place)."""

    async def read() -> str:
        if oauth.assertion is not None:
            return value("assertion", oauth.assertion)
        assert oauth.assertion_file is not None
        path = Path(value("assertion_file", oauth.assertion_file)).expanduser()
        try:
            return (await anyio.Path(path).read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise UpstreamUnavailable(server, f"cannot read assertion_file {path}: {exc.strerror}") from None

    return read
