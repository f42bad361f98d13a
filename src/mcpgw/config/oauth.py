"""`[servers.NAME.oauth]` and `[servers.NAME.login]`: how mcpgw gets a token for an upstream.

Owns: the client-credentials table (`UpstreamOAuth`, with its private-key, jwt-bearer and
enterprise-managed variants, `UpstreamEnterprise`) and the interactive login table
(`UpstreamLogin`: the client id or its metadata document, the redirect port, per-user logins).
Checked here: one credential each, token URLs over HTTP(S).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mcpgw.config.base import Strict


class UpstreamEnterprise(Strict):
    """`[servers.X.oauth.enterprise]`: enterprise-managed authorization (SEP-990). The user's ID
    token from the enterprise IdP is exchanged there (RFC 8693) for an identity assertion grant
    (ID-JAG), which the upstream's authorization server (`issuer`) takes by the jwt-bearer grant."""

    idp_token_url: str
    idp_client_id: str
    idp_client_secret: str | None = None
    id_token: str | None = None
    """The user's ID token from the IdP (usually `${VAR}`)."""
    id_token_file: str | None = None
    """As `id_token`, read from this file at each exchange."""

    @model_validator(mode="after")
    def _one_id_token(self) -> UpstreamEnterprise:
        if (self.id_token is None) == (self.id_token_file is None):
            raise ValueError("needs exactly one of `id_token` and `id_token_file`")
        return self


class UpstreamOAuth(Strict):
    """`[servers.X.oauth]`: the OAuth 2.1 client-credentials grant mcpgw uses for an HTTP upstream.

    Values may use `${VAR}`, resolved from the environment or `[gateway] secrets_file`. Without
    `token_url` the authorization server is discovered from the upstream (RFC 9728, RFC 8414),
    `issuer` naming the only one the client secret may go to.
    """

    token_url: str | None = None
    issuer: str | None = None
    """With discovery: the authorization server's issuer; another one the upstream names is refused."""
    client_id: str
    client_secret: str | None = None
    private_key: str | None = None
    """A PEM private key (usually `${VAR}`) instead of `client_secret`: the client authenticates
    with a JWT it signs (`private_key_jwt`, RFC 7523), needing discovery (no `token_url`)."""
    signing_algorithm: str = "RS256"
    """The JWS algorithm of `private_key` (RS256, ES256, ...)."""
    assertion: str | None = None
    """A JWT the platform issued this workload (usually `${VAR}`), exchanged for a token by the
    RFC 7523 jwt-bearer grant (workload identity federation) instead of a client credential."""
    assertion_file: str | None = None
    """As `assertion`, read from this file at each token request (a projected, rotated token)."""
    enterprise: UpstreamEnterprise | None = None
    """With `client_secret` and `issuer`: the assertion comes from the enterprise IdP (SEP-990)."""
    scope: str | None = None
    resource: str | None = None
    """RFC 8707 resource indicator sent with the token request (the upstream's URL, usually)."""
    audience: str | None = None
    """Sent as `audience` for authorization servers that want it instead of `resource` (Auth0)."""
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    refresh_before: Annotated[float, Field(ge=0)] = 60.0
    """Seconds before expiry at which the token is replaced (at most half its lifetime)."""

    @field_validator("token_url", "issuer")
    @classmethod
    def _token_url_is_http(cls, url: str | None) -> str | None:
        if url is not None and "${" not in url and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _one_credential(self) -> UpstreamOAuth:
        given = [
            name
            for name in ("client_secret", "private_key", "assertion", "assertion_file")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "needs exactly one of `client_secret`, `private_key`, `assertion` and `assertion_file`"
            )
        if given[0] != "client_secret" and self.token_url is not None:
            raise ValueError(f"`{given[0]}` works with discovery: leave out `token_url` (set `issuer`)")
        if self.enterprise is not None and (
            given[0] != "client_secret" or self.issuer is None or self.token_url is not None
        ):
            raise ValueError("`enterprise` needs `client_secret` and `issuer` (and no `token_url`)")
        return self


class UpstreamLogin(Strict):
    """`[servers.X.login]`: how `mcpgw login X` signs in to an OAuth-protected URL server.

    All optional: without it, mcpgw discovers the authorization server (RFC 9728, RFC 8414) and
    registers itself there (RFC 7591). Values may use `${VAR}`.
    """

    client_id: str | None = None
    """A client registered by hand at the authorization server (no dynamic registration)."""
    client_secret: str | None = None
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    """How a configured `client_secret` is sent to the token endpoint."""
    scope: str | None = None
    """The scope asked for (else the one the server challenges with or advertises)."""
    client_metadata_url: str | None = None
    """An https URL of a client ID metadata document, used as the client id where the server allows."""
    redirect_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """The loopback port the browser is sent back to (0: any free one, kept for later logins)."""
    per_user: bool = False
    """Served over HTTP with `[auth]`: each caller logs in for itself and its calls go upstream with
    its own token, in its own session (`mcpgw login` then only lists the server's tools)."""
