"""`[servers.NAME]`: one upstream MCP server, as a validated model.

Owns: the schema of a server entry, its OAuth client-credentials table, and the names it
exposes under (`namespace_of`).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mcpgw.config.base import NAMESPACE_RE, SEPARATOR, TOOL_NAME_RE, Strict

Transport = Literal["stdio", "http", "sse"]
Era = Literal["auto", "handshake", "stateless"]
"""How mcpgw speaks to an upstream: probe (`server/discover`, falling back to `initialize`),
the `initialize` handshake (2025-11-25 and earlier), or the stateless 2026-07-28 revision."""


class UpstreamOAuth(Strict):
    """`[servers.X.oauth]`: the OAuth 2.1 client-credentials grant mcpgw uses for an HTTP upstream.

    Values may use `${VAR}`, resolved from the environment or `[gateway] secrets_file`.
    """

    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    resource: str | None = None
    """RFC 8707 resource indicator sent with the token request (the upstream's URL, usually)."""
    audience: str | None = None
    """Sent as `audience` for authorization servers that want it instead of `resource` (Auth0)."""
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    refresh_before: Annotated[float, Field(ge=0)] = 60.0
    """Seconds before expiry at which the token is replaced (at most half its lifetime)."""

    @field_validator("token_url")
    @classmethod
    def _token_url_is_http(cls, url: str) -> str:
        if "${" not in url and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url


class ServerConfig(Strict):
    """One upstream MCP server: a stdio command, or a URL (streamable HTTP or legacy SSE)."""

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    transport: Transport | None = None
    enabled: bool = True
    timeout: Annotated[float, Field(gt=0)] | None = None
    """Seconds one call may take; the gateway default when absent."""
    namespace: str | None = None
    """Prefix of every exposed name; defaults to the table name; `""` exposes names unprefixed."""
    roots: list[str] = Field(default_factory=list)
    """Roots answered to this upstream's `roots/list` (URIs, or paths made `file://` URIs)."""
    aliases: dict[str, str] = Field(default_factory=dict)
    """Upstream tool name -> exposed name (after the namespace), to fix long or invalid names."""
    description: str | None = None
    era: Era = "auto"
    restart: bool = True
    """Restart (with exponential backoff and jitter) when it fails to start or dies."""
    tool_timeouts: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Upstream tool name -> seconds one call of it may take, overriding `timeout`."""
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    """Calls in flight to this upstream at once; more wait their turn. The gateway default when absent."""
    oauth: UpstreamOAuth | None = None
    """URL servers behind OAuth: mcpgw's own client-credentials token, never the caller's."""

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if not parts.netloc:
            raise ValueError(f"{url!r} has no host")
        return url

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, namespace: str | None) -> str | None:
        if namespace and not NAMESPACE_RE.match(namespace):
            raise ValueError(
                f"namespace {namespace!r} must be letters, digits, '-' and single '_' "
                f"(never '{SEPARATOR}', which separates it from the tool name)"
            )
        return namespace

    @field_validator("aliases")
    @classmethod
    def _aliases_shape(cls, aliases: dict[str, str]) -> dict[str, str]:
        for original, alias in aliases.items():
            if not TOOL_NAME_RE.match(alias):
                raise ValueError(f"alias {alias!r} for {original!r} must match {TOOL_NAME_RE.pattern}")
        return aliases

    @model_validator(mode="after")
    def _one_kind(self) -> ServerConfig:
        if self.command is None and self.url is None:
            raise ValueError("needs either 'command' (a stdio server) or 'url' (an HTTP server)")
        if self.command is not None and self.url is not None:
            raise ValueError("has both 'command' and 'url'; a server is one or the other")
        if self.command is not None:
            if self.transport not in (None, "stdio"):
                raise ValueError(f"transport {self.transport!r} needs 'url', not 'command'")
            if self.headers:
                raise ValueError("'headers' applies to URL servers; use 'env' for a command")
        else:
            if self.transport == "stdio":
                raise ValueError("transport 'stdio' needs 'command', not 'url'")
            if self.args or self.env or self.cwd:
                raise ValueError("'args', 'env' and 'cwd' apply to command servers, not URL servers")
        if self.oauth is not None and self.command is not None:
            raise ValueError("'oauth' applies to URL servers; a command server gets credentials via 'env'")
        if self.command is not None and not self.command.strip():
            raise ValueError("'command' is empty")
        return self

    @property
    def kind(self) -> Transport:
        if self.command is not None:
            return "stdio"
        return self.transport or "http"


def namespace_of(name: str, server: ServerConfig) -> str:
    return name if server.namespace is None else server.namespace
