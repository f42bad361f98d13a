"""The gateway's own OAuth grants with discovery: client credentials by secret or by signed JWT.

Owns: `discovered_client_credentials`, the httpx auth of `[servers.X.oauth]` without `token_url`:
the mcp SDK's `ClientCredentialsOAuthProvider` (a client secret) or `PrivateKeyJWTOAuthProvider`
(`private_key`: RFC 7523 client authentication, a JWT signed per token request), or the RFC 7523
jwt-bearer grant with a workload's own JWT (`assertion`, `assertion_file`: workload identity
federation; `_compat.jwt_bearer_provider`), or with an enterprise IdP's ID-JAG (`enterprise`:
SEP-990, the SDK's `IdentityAssertionOAuthProvider` at the configured issuer), which discover
the authorization server from the upstream's 401 (RFC 9728, RFC 8414), wrapped in `LoginAuth`.
(With `token_url`, `credentials.ClientCredentials` asks Authlib instead.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from pathlib import Path

import anyio
import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from mcpgw import _compat
from mcpgw.config import UpstreamOAuth, expand
from mcpgw.config.oauth import UpstreamEnterprise
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
) -> httpx2.Auth:
    """`[servers.X.oauth]` without `token_url`: the SDK's client-credentials provider, which
    discovers the authorization server from the upstream's 401 (no early refresh: a new token is
    fetched at the next 401, there being no refresh token in this grant)."""
    import warnings

    from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

    def value(field: str, text: str) -> str:
        return expand(text, key=f"servers.{server}.oauth.{field}", environ=environ)

    issuer = value("issuer", oauth.issuer) if oauth.issuer else None
    if oauth.enterprise is not None:
        assert issuer is not None and oauth.client_secret is not None  # see UpstreamOAuth
        return _enterprise(server, oauth, oauth.enterprise, url, issuer, value)
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
                assertion=_assertion(server, value=value, text=oauth.assertion, file=oauth.assertion_file),
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
    server: str,
    *,
    value: Callable[[str, str], str],
    text: str | None,
    file: str | None,
    names: tuple[str, str] = ("assertion", "assertion_file"),
) -> Callable[[], Awaitable[str]]:
    """A JWT for each token request: configured (`text`), or read from `file` each time (a
    platform rotates a projected token in place)."""

    async def read() -> str:
        if text is not None:
            return value(names[0], text)
        assert file is not None
        path = Path(value(names[1], file)).expanduser()
        try:
            return (await anyio.Path(path).read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise UpstreamUnavailable(server, f"cannot read {names[1]} {path}: {exc.strerror}") from None

    return read


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"


def _enterprise(
    server: str,
    oauth: UpstreamOAuth,
    enterprise: UpstreamEnterprise,
    url: str,
    issuer: str,
    value: Callable[[str, str], str],
) -> httpx2.Auth:
    """SEP-990: the SDK's `IdentityAssertionOAuthProvider` (the jwt-bearer grant at `issuer`, never
    at a server the upstream names), its ID-JAG from an RFC 8693 token exchange at the enterprise
    IdP through Authlib's client (the SDK leaves that leg to the application)."""
    from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider

    def field(name: str, text: str) -> str:
        return value(f"enterprise.{name}", text)

    token_url = field("idp_token_url", enterprise.idp_token_url)
    id_token = _assertion(
        server,
        value=field,
        text=enterprise.id_token,
        file=enterprise.id_token_file,
        names=("id_token", "id_token_file"),
    )

    async def id_jag(audience: str, resource: str) -> str:
        from authlib.common.errors import AuthlibBaseError
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        secret = (
            field("idp_client_secret", enterprise.idp_client_secret) if enterprise.idp_client_secret else None
        )
        async with AsyncOAuth2Client(
            client_id=field("idp_client_id", enterprise.idp_client_id),
            client_secret=secret,
            token_endpoint_auth_method="client_secret_post" if secret else "none",
            timeout=30.0,
        ) as idp:
            try:
                token = await idp.fetch_token(
                    token_url,
                    grant_type=TOKEN_EXCHANGE,
                    subject_token=await id_token(),
                    subject_token_type=ID_TOKEN_TYPE,
                    requested_token_type=ID_JAG_TYPE,
                    audience=audience,
                    resource=resource,
                )
            except (AuthlibBaseError, httpx2.HTTPError, ValueError, KeyError) as exc:
                raise UpstreamUnavailable(
                    server, f"OAuth: token exchange at {token_url} failed: {exc}"
                ) from None
        return str(token["access_token"])

    provider = IdentityAssertionOAuthProvider(
        url,
        _Memory(),
        client_id=value("client_id", oauth.client_id),
        client_secret=value("client_secret", oauth.client_secret or ""),
        issuer=issuer,
        assertion_provider=id_jag,
        scope=value("scope", oauth.scope) if oauth.scope else None,
        token_endpoint_auth_method=oauth.auth_method,
    )
    return _Translated(server, provider)


class _Translated(httpx2.Auth):
    """An SDK auth flow whose OAuth errors become `UpstreamUnavailable`, as `LoginAuth`'s do."""

    requires_response_body = True

    def __init__(self, server: str, inner: httpx2.Auth) -> None:
        self.server = server
        self.inner = inner

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        from mcp.client.auth import OAuthFlowError, OAuthTokenError

        flow = self.inner.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        except (OAuthFlowError, OAuthTokenError) as exc:
            raise UpstreamUnavailable(self.server, f"OAuth: {exc}") from None
        finally:
            await flow.aclose()
