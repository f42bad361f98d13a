"""`[servers.NAME]`: one upstream MCP server, as a union of one model per transport.

Owns: the schema of a server entry: `StdioServer` (a command), `HttpServer` (streamable HTTP),
`SseServer` (legacy SSE) and `OpenApiServer` (a REST API described by an OpenAPI document, served
in process), joined in `ServerConfig`, a discriminated union. TOML has no type key, so the entry's
keys pick its model: `openapi` means a REST API, `command` means stdio, `url` with
`transport = "sse"` means SSE, `url` otherwise streamable HTTP. Also owned here: the error for a
key that belongs to another kind of server, what each kind needs to be reached (`to_params`,
`${VAR}` expanded), the OAuth client-credentials table, and the names a server exposes under
(`namespace_of`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeAlias
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from mcp.client.stdio import StdioServerParameters
from pydantic_core import InitErrorDetails, PydanticCustomError

from mcpgw.config.base import NAMESPACE_RE, SEPARATOR, TOOL_NAME_RE, Strict
from mcpgw.config.env import expand, resolved_command
from mcpgw.config.flows import Label
from mcpgw.config.oauth import UpstreamLogin, UpstreamOAuth
from mcpgw.errors import ConfigError

Transport = Literal["stdio", "http", "sse", "openapi"]
Era = Literal["auto", "handshake", "stateless"]
"""How mcpgw speaks to an upstream: probe (`server/discover`, falling back to `initialize`),
the `initialize` handshake (2025-11-25 and earlier), or the stateless 2026-07-28 revision."""


class _Server(Strict):
    """What every server entry has, whatever its transport."""

    kind: ClassVar[Transport]
    """The tag of the model in `ServerConfig`; shown by `mcpgw list-servers`."""
    _TOLERATED: ClassVar[frozenset[str]] = frozenset()
    """Keys of another kind accepted (and dropped) when empty, as they were before the split."""

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
    labels: list[Label] | None = None
    """Flow labels of every tool of this server (and of its resources); from annotations when absent."""
    tool_labels: dict[str, list[Label]] = Field(default_factory=dict)
    """Upstream tool name -> its flow labels, replacing `labels` and the annotations' for that tool."""
    apps: bool = True
    """Declare the MCP Apps extension (`io.modelcontextprotocol/ui`) to this upstream. A 2026-07-28
    upstream is told per request, and only when the calling client renders apps; a handshake-era
    session is shared by every client, so it is declared for all of them (see README, "MCP Apps")."""

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

    @model_validator(mode="before")
    @classmethod
    def _no_keys_of_another_kind(cls, data: Any) -> Any:
        """A key of another kind of server is refused with a reason, not as an unknown key."""
        if not isinstance(data, Mapping):
            return data
        # An empty value of another kind's key (`args = []` on a URL server) was accepted before
        # the models were split; it still is, so no file that loaded stops loading.
        data = {key: value for key, value in data.items() if not (key in cls._TOLERATED and _empty(value))}
        # Raised as a ValidationError so each error names its own key (`servers.a.headers`);
        # a ValueError would name only the entry.
        errors = [
            InitErrorDetails(
                type=PydanticCustomError("other_kind", "{reason}", {"reason": reason}),
                loc=(key,) if key else (),
                input=data.get(key) if key else data,
            )
            for key, reason in cls._misplaced(data)
        ]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    @classmethod
    def _misplaced(cls, data: Mapping[str, Any]) -> Iterator[tuple[str | None, str]]:
        """(key, reason) for each key in `data` that belongs to another kind; key None: the entry."""
        yield from ()

    def entry(self) -> dict[str, Any]:
        """This server as a registry entry: keys that differ from their defaults, the ones saying
        what to run or reach (`command`, `url`, ...) first, as a person writes them."""
        data = self.model_dump(exclude_defaults=True)
        own = {key: value for key, value in data.items() if key not in _Server.model_fields}
        return {**own, **{key: value for key, value in data.items() if key not in own}}


def _empty(value: Any) -> bool:
    return isinstance(value, list | dict | str) and not value


class StdioServer(_Server):
    """A server mcpgw starts as a child process and speaks to over its stdin and stdout."""

    kind: ClassVar[Transport] = "stdio"

    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    transport: Literal["stdio"] | None = None

    _TOLERATED: ClassVar[frozenset[str]] = frozenset({"headers"})

    @field_validator("command")
    @classmethod
    def _command_not_blank(cls, command: str) -> str:
        if not command.strip():
            raise ValueError("'command' is empty")
        return command

    @classmethod
    def _misplaced(cls, data: Mapping[str, Any]) -> Iterator[tuple[str | None, str]]:
        if "url" in data:
            yield None, "has both 'command' and 'url'; a server is one or the other"
        if (transport := data.get("transport")) in ("http", "sse"):
            yield "transport", f"transport {transport!r} needs 'url', not 'command'"
        if "headers" in data:
            yield "headers", "'headers' applies to URL servers; use 'env' for a command"
        if "oauth" in data:
            yield "oauth", "'oauth' applies to URL servers; a command server gets credentials via 'env'"
        if "http2" in data:
            yield "http2", "'http2' applies to URL servers (https://), not command servers"

    def to_params(self, name: str, *, environ: Mapping[str, str] | None = None) -> StdioServerParameters:
        """The SDK's parameters that start server `name`, `${VAR}` expanded.

        `environ` (default: the process environment) answers `${VAR}` in `env` values and arguments,
        so they may come from the secrets file (an import moves a token in `args` there); the
        command and `cwd` read the process environment.
        A bare command is looked up on PATH, then beside the gateway's Python.
        """
        key = f"servers.{name}"
        # Imported here: the mcp client stack is heavy, and `mcpgw --help` loads this module.
        from mcp.client.stdio import StdioServerParameters

        return StdioServerParameters(
            command=resolved_command(expand(self.command, key=f"{key}.command")),
            args=[expand(arg, key=f"{key}.args", environ=environ) for arg in self.args],
            env={k: expand(v, key=f"{key}.env.{k}", environ=environ) for k, v in self.env.items()} or None,
            cwd=expand(self.cwd, key=f"{key}.cwd") if self.cwd else None,
        )


@dataclass(frozen=True)
class UrlParams:
    """What the streamable HTTP and SSE clients need to reach a server, `${VAR}` expanded."""

    url: str
    headers: dict[str, str] | None
    """None when the entry sets none."""


class _UrlServer(_Server):
    """A server mcpgw reaches at a URL: streamable HTTP or legacy SSE."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    oauth: UpstreamOAuth | None = None
    """URL servers behind OAuth: mcpgw's own client-credentials token, never the caller's."""
    login: UpstreamLogin | None = None
    """Settings for `mcpgw login` (any URL server without `oauth` or an `Authorization` header may
    be logged in to; this table only changes how)."""
    http2: bool = True
    """Offer HTTP/2 to an `https://` server, which takes it or not (TLS ALPN); false: HTTP/1.1 only.
    Plain `http://` is always HTTP/1.1."""

    def takes_login(self) -> bool:
        """Whether the tokens of `mcpgw login` are what reach this server (no other credential is set)."""
        return self.oauth is None and not any(k.lower() == "authorization" for k in self.headers)

    _TOLERATED: ClassVar[frozenset[str]] = frozenset({"args", "env", "cwd"})

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        if url.startswith("${"):
            return url  # `${BASE_URL}/mcp` (Claude Code's .mcp.json has these): checked once expanded
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if not parts.netloc:
            raise ValueError(f"{url!r} has no host")
        return url

    @classmethod
    def _misplaced(cls, data: Mapping[str, Any]) -> Iterator[tuple[str | None, str]]:
        if "command" in data:
            yield None, "has both 'command' and 'url'; a server is one or the other"
        transport = data.get("transport")
        if transport == "stdio":
            yield "transport", "transport 'stdio' needs 'command', not 'url'"
        elif transport not in (None, "http", "sse"):
            yield "transport", "Input should be 'http' or 'sse' (streamable HTTP when left out)"
        if "args" in data:
            yield "args", "'args' applies to command servers, not URL servers"
        if "env" in data:
            yield "env", "'env' applies to command servers; use 'headers' for a URL server"
        if "cwd" in data:
            yield "cwd", "'cwd' applies to command servers, not URL servers"

    def to_params(self, name: str, *, environ: Mapping[str, str] | None = None) -> UrlParams:
        """The URL and headers that reach server `name`, `${VAR}` expanded.

        `environ` (default: the process environment) answers `${VAR}` in the URL and header values,
        so they may come from the secrets file (an import moves a key in a URL's query there).
        """
        key = f"servers.{name}"
        url = expand(self.url, key=f"{key}.url", environ=environ)
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigError(
                f"{self.url!r} expands to {url!r}, not an http:// or https:// URL", key=f"{key}.url"
            )
        return UrlParams(
            url=url,
            headers={k: expand(v, key=f"{key}.headers.{k}", environ=environ) for k, v in self.headers.items()}
            or None,
        )


class HttpServer(_UrlServer):
    """A server reached over streamable HTTP (`url` without `transport = "sse"`)."""

    kind: ClassVar[Transport] = "http"

    transport: Literal["http"] | None = None


class SseServer(_UrlServer):
    """A server reached over the legacy HTTP+SSE transport (`url` with `transport = "sse"`)."""

    kind: ClassVar[Transport] = "sse"

    transport: Literal["sse"]


HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")
"""The operations of an OpenAPI path item, as `include`/`exclude` patterns name them."""


@dataclass(frozen=True)
class OpenApiParams:
    """What the in-process server of an OpenAPI upstream needs, `${VAR}` expanded."""

    spec: str
    """The document's URL, or its file path."""
    base_url: str | None
    """None: the spec's own `servers` entry."""
    headers: dict[str, str]


class OpenApiServer(_Server):
    """A REST API whose operations mcpgw serves as tools, from its OpenAPI 3.0 or 3.1 document.

    The tools are served by an in-process fastmcp server over memory streams (`upstream.openapi`),
    so they pass through the same catalog, personas, data rules, pins, audit and limits as any
    other upstream's.
    """

    kind: ClassVar[Transport] = "openapi"

    openapi: str
    """The spec: an http(s) URL, or a path to a JSON or YAML file."""
    base_url: str | None = None
    """Where the API is; default: the spec's first `servers` URL (resolved against the spec's URL)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every API call (credentials); a spec's header parameter of the same name is dropped."""
    include: list[str] = Field(default_factory=list)
    """Operations to serve (default: all): `"GET /invoices*"`, `"/invoices*"` (any method), or an
    operationId glob (`"list*"`)."""
    exclude: list[str] = Field(default_factory=list)
    """Operations left out, in the same forms; applied after `include`."""

    @field_validator("openapi")
    @classmethod
    def _spec_not_blank(cls, spec: str) -> str:
        if not spec.strip():
            raise ValueError("'openapi' is empty: give the spec's URL or file path")
        if "://" in spec and not spec.startswith(("${", "http://", "https://", "file://")):
            raise ValueError(f"{spec!r} is not an http(s) URL or a file path")
        return spec

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, url: str | None) -> str | None:
        if url is None or url.startswith("${"):
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    @field_validator("include", "exclude")
    @classmethod
    def _patterns_shape(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            method, sep, path = pattern.strip().partition(" ")
            if sep and (method.upper() not in (*HTTP_METHODS, "*") or not path.strip().startswith("/")):
                raise ValueError(
                    f"{pattern!r} must be 'METHOD /path-glob' (METHOD one of {', '.join(HTTP_METHODS)} "
                    "or *), '/path-glob', or an operationId glob"
                )
            if not pattern.strip():
                raise ValueError("an empty pattern matches nothing")
        return patterns

    @classmethod
    def _misplaced(cls, data: Mapping[str, Any]) -> Iterator[tuple[str | None, str]]:
        if "command" in data or "url" in data:
            other = "command" if "command" in data else "url"
            yield None, f"has both 'openapi' and '{other}'; a server is one or the other"
        for key in ("args", "env", "cwd"):
            if key in data:
                yield key, f"'{key}' applies to command servers, not OpenAPI servers"
        for key in ("transport", "oauth", "login"):
            if key in data:
                yield (
                    key,
                    f"'{key}' applies to MCP URL servers; an OpenAPI server's credentials go in 'headers'",
                )

    def to_params(self, name: str, *, environ: Mapping[str, str] | None = None) -> OpenApiParams:
        """The spec, base URL and headers of server `name`, `${VAR}` expanded (from `environ` too)."""
        key = f"servers.{name}"
        base_url = expand(self.base_url, key=f"{key}.base_url", environ=environ) if self.base_url else None
        if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
            raise ConfigError(
                f"{self.base_url!r} expands to {base_url!r}, not an http(s) URL", key=f"{key}.base_url"
            )
        return OpenApiParams(
            spec=expand(self.openapi, key=f"{key}.openapi", environ=environ),
            base_url=base_url,
            headers={
                k: expand(v, key=f"{key}.headers.{k}", environ=environ) for k, v in self.headers.items()
            },
        )


def _kind_of(entry: Any) -> Transport | None:
    """The tag of the model an entry is, from its keys; None when it has none of them."""
    if isinstance(entry, _Server):
        return entry.kind
    if isinstance(entry, Mapping):
        if "openapi" in entry:
            return "openapi"  # with 'command' or 'url' too, `OpenApiServer` says the entry has both
        if "command" in entry:
            return "stdio"  # with 'url' too, `StdioServer` says the entry has both
        if "url" in entry:
            return "sse" if entry.get("transport") == "sse" else "http"
    return None


def _a_table(entry: Any) -> Any:
    if isinstance(entry, Mapping | _Server):
        return entry
    raise ValueError(f"must be a table with 'command' or 'url' (or 'openapi'), not {type(entry).__name__}")


ServerConfig: TypeAlias = Annotated[
    Annotated[StdioServer, Tag("stdio")]
    | Annotated[HttpServer, Tag("http")]
    | Annotated[SseServer, Tag("sse")]
    | Annotated[OpenApiServer, Tag("openapi")],
    Discriminator(
        _kind_of,
        custom_error_type="server_kind",
        custom_error_message=(
            "needs either 'command' (a stdio server) or 'url' (an HTTP server), "
            "or 'openapi' (a REST API's spec)"
        ),
    ),
    BeforeValidator(_a_table),
]
"""One upstream: a stdio command, a URL (streamable HTTP or legacy SSE), or a REST API's OpenAPI spec."""


def namespace_of(name: str, server: ServerConfig) -> str:
    return name if server.namespace is None else server.namespace
