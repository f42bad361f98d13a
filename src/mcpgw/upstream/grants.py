"""The gateway's own OAuth grants with discovery: client credentials by secret or by signed JWT.

Owns: `discovered_client_credentials`, the httpx auth of `[servers.X.oauth]` without `token_url`:
the mcp SDK's `ClientCredentialsOAuthProvider` (a client secret) or `PrivateKeyJWTOAuthProvider`
(`private_key`: RFC 7523 client authentication, a JWT signed per token request), which discover
the authorization server from the upstream's 401 (RFC 9728, RFC 8414), wrapped in `LoginAuth`.
(With `token_url`, `credentials.ClientCredentials` asks Authlib instead.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from mcpgw.config import UpstreamOAuth, expand
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
            "secret goes to whichever authorization server the upstream names",
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
