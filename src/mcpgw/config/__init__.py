"""The registry file, `servers.toml`, as validated pydantic models.

Owns: the schema of the file (unknown keys rejected everywhere), where the file
is found, `${VAR}` expansion, and turning TOML and validation failures into a
`ConfigError` that names the file, the key and the reason. Editing the file
(keeping comments and order) belongs to `registry`.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic import ValidationInfo as ValidationInfo

from mcpgw.errors import ConfigError

SEPARATOR = "__"
"""Joins a namespace and an upstream name: `github__create_issue`."""

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What Claude's and other clients' APIs accept as a tool name."""

SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEFAULT_CONFIG_NAME = "servers.toml"
ENV_CONFIG = "MCPGW_CONFIG"

Transport = Literal["stdio", "http", "sse"]
Era = Literal["auto", "handshake", "stateless"]
Mode = Literal["prototype", "production"]
"""`prototype`: security findings are warnings; `production`: they are refusals."""
"""How mcpgw speaks to an upstream: probe (`server/discover`, falling back to `initialize`),
the `initialize` handshake (2025-11-25 and earlier), or the stateless 2026-07-28 revision."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamOAuth(_Strict):
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


class ServerConfig(_Strict):
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


class GatewaySettings(_Strict):
    """`[gateway]`: settings of the gateway itself."""

    name: str = "mcpgw"
    timeout: Annotated[float, Field(gt=0)] = 60.0
    """Default seconds per upstream call."""
    startup_timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds an upstream may take to start and answer its first listing."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    restart_backoff_max: Annotated[float, Field(gt=0)] = 30.0
    """The longest wait between two restarts of a failing upstream."""
    ping_interval: Annotated[float, Field(ge=0)] = 30.0
    """Seconds between pings of each ready upstream; one that does not answer is restarted. 0: never."""
    ping_timeout: Annotated[float, Field(gt=0)] = 10.0
    drain_grace: Annotated[float, Field(ge=0)] = 10.0
    """On SIGTERM, seconds in-flight calls may take to finish before everything stops."""
    max_concurrent: Annotated[int, Field(ge=1)] = 64
    """Default calls in flight per upstream; beyond it calls queue, within their timeout."""
    max_request_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    """The largest request a client may send (one stdio line, one HTTP body)."""
    max_result_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    """The largest result (text and binary content) an upstream may return through the gateway."""
    mode: Mode = "prototype"
    """`production` turns security warnings (unpinned tools, poisoning, no auth) into refusals."""
    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the HTTP endpoints; `production` refuses `*`."""
    secrets_file: str | None = None
    """A dotenv file (`NAME=value`) read for `${NAME}` in upstream env, headers and oauth; the
    environment wins over it."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """HTTP `Host` values accepted besides loopback (`name`, `name:port`, `name:*`); against DNS rebinding."""
    allowed_origins: list[str] = Field(default_factory=list)
    """HTTP `Origin` values accepted besides loopback ones (`https://app.example.com`, `http://name:*`)."""

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_shape(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host or "/" in host or any(c.isspace() for c in host):
                raise ValueError(f"{host!r} is not a host name with an optional ':port' or ':*'")
        return hosts

    @field_validator("allowed_origins")
    @classmethod
    def _origins_shape(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin.removesuffix(":*"))
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(
                    f"{origin!r} is not an origin like 'https://app.example.com' or 'http://name:*'"
                )
        return origins


class Filter(_Strict):
    """Glob rules over exposed names (or URIs): allowed unless denied; deny wins."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)


class ToolOverride(_Strict):
    """How one tool looks to a persona. Keyed by the tool's exposed catalog name."""

    name: str | None = None
    description: str | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    """Argument values the gateway injects; the client never sees or sets them."""
    narrow: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Argument name -> JSON schema that replaces its property (e.g. an enum); enforced on calls."""

    @field_validator("name")
    @classmethod
    def _name_shape(cls, name: str | None) -> str | None:
        if name is not None and not TOOL_NAME_RE.match(name):
            raise ValueError(f"tool name {name!r} must match {TOOL_NAME_RE.pattern}")
        return name


class PersonaConfig(_Strict):
    """`[personas.NAME]`: a least-privilege view of the catalog."""

    description: str | None = None
    servers: list[str] | None = None
    """Servers whose names this persona may see; all when absent."""
    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)
    read_only: bool = False
    """Only tools annotated read-only and not destructive."""
    resources: Filter = Field(default_factory=Filter)
    prompts: Filter = Field(default_factory=Filter)
    tools: dict[str, ToolOverride] = Field(default_factory=dict)
    catalog: Literal["full", "search"] = "full"
    """`search`: the client sees a search tool and a call tool instead of the whole list."""


class AuditSettings(_Strict):
    """`[audit]`: the SQLite audit log."""

    enabled: bool = True
    path: str | None = None
    """Database file; default $MCPGW_AUDIT_DB, else ~/.local/share/mcpgw/audit.db."""
    retention_days: Annotated[float, Field(ge=0)] = 30
    """Rows older than this are deleted when the gateway starts; 0 keeps everything."""
    max_buffer: Annotated[int, Field(ge=1000)] = 100_000
    """Rows kept in memory while the disk fails; beyond this they are dropped and counted."""
    redact_keys: list[str] = Field(default_factory=list)
    """Extra argument names whose values are never stored (password, token, ... always are)."""
    redact_patterns: list[str] = Field(default_factory=list)
    """Extra regular expressions replaced wherever they match."""

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return patterns


ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
"""Signature algorithms a bearer token may use: public-key ones only, checked against the JWKS."""


class AuthSettings(_Strict):
    """`[auth]`: over HTTP, mcpgw is an OAuth 2.1 resource server that accepts only JWTs issued for it."""

    issuer: str
    """The authorization server: the token's `iss` must equal it exactly."""
    jwks_url: str
    """Where the issuer publishes its signing keys (fetched, cached, refreshed on an unknown key id)."""
    public_url: str
    """mcpgw's own base URL as clients reach it; its resources are `<public_url>/mcp` and
    `<public_url>/personas/<name>/mcp`."""
    audience: list[str] = Field(default_factory=list)
    """Accepted `aud` values; default: `public_url` and each of its resource URLs."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    required_scopes: list[str] = Field(default_factory=list)
    """Scopes every token needs; a token short of them gets 403 insufficient_scope."""
    clock_skew: Annotated[float, Field(ge=0, le=300)] = 30.0
    """Seconds of leeway on `exp`, `nbf` and `iat`."""
    jwks_cache_seconds: Annotated[float, Field(gt=0)] = 3600.0
    jwks_min_refresh_seconds: Annotated[float, Field(ge=0)] = 30.0
    """An unknown key id refetches the JWKS at most this often (forged key ids cost nothing)."""
    persona_claim: str | None = None
    """Claim naming the caller's persona(s): a string (space-separated) or a list, e.g.
    `mcpgw_persona`, `groups` or `scope`. Unset: the token does not choose the persona."""
    persona_prefix: str = ""
    """Only claim values with this prefix count, prefix removed (e.g. `mcpgw:persona:` in `scope`)."""
    persona_map: dict[str, str] = Field(default_factory=dict)
    """Claim value -> persona name, for claims such as groups whose values are not persona names."""

    @field_validator("issuer", "jwks_url", "public_url")
    @classmethod
    def _is_http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        if not algorithms:
            raise ValueError('at least one algorithm is needed, e.g. ["RS256"]')
        for algorithm in algorithms:
            if algorithm.lower() == "none":
                raise ValueError("'none' is never accepted: an unsigned token proves nothing")
            if algorithm.upper().startswith("HS"):
                raise ValueError(
                    f"{algorithm!r} is a shared-secret algorithm; tokens are checked against the "
                    "issuer's public keys, and accepting HS* there invites key confusion"
                )
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"unknown algorithm {algorithm!r} (use {sorted(ASYMMETRIC_ALGORITHMS)})")
        return algorithms


Direction = Literal["arguments", "results", "sampling"]
"""Tool-call arguments going up, results coming back, sampling prompts going to a model."""
DIRECTIONS: tuple[Direction, ...] = ("arguments", "results", "sampling")
DETECTOR_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


class DataRule(_Strict):
    """`[[security.rules]]`: what to do when detectors fire on one direction of traffic."""

    detectors: Annotated[list[str], Field(min_length=1)]
    """Built-in detector names (aws-key, github-token, slack-token, private-key, jwt, bearer,
    url-password, card, email) or names from `[security.detectors]`."""
    action: Literal["monitor", "redact", "block"]
    directions: list[Direction] = Field(default_factory=lambda: list(DIRECTIONS))
    personas: list[str] | None = None
    """Personas the rule applies to; every request (with or without a persona) when absent."""
    tools: list[str] = Field(default_factory=lambda: ["*"])
    """Globs over exposed tool names (and resource URIs, prompt names for results)."""


class SecuritySettings(_Strict):
    """`[security]`: pinned definitions, poisoning checks and data rules."""

    lock: str | None = None
    """The lock file of pinned definitions; default: the registry's name with `.lock` (servers.lock)."""
    max_description: Annotated[int, Field(ge=1)] = 2000
    """Longer descriptions (tools, prompts, resources, schema fields) are flagged as possible poisoning."""
    detectors: dict[str, str] = Field(default_factory=dict)
    """Custom detectors: name -> regular expression."""
    rules: list[DataRule] = Field(default_factory=list)

    @field_validator("detectors")
    @classmethod
    def _detectors_compile(cls, detectors: dict[str, str]) -> dict[str, str]:
        from mcpgw.detectors import BUILTIN

        for name, pattern in detectors.items():
            if not DETECTOR_NAME_RE.match(name):
                raise ValueError(f"detector name {name!r} must be lower-case letters, digits and '-'")
            if name in BUILTIN:
                raise ValueError(f"detector {name!r} is built in; give the custom one another name")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"detector {name!r}: {pattern!r} is not a valid regular expression: {exc}"
                ) from None
        return detectors

    @model_validator(mode="after")
    def _rules_name_detectors(self) -> SecuritySettings:
        from mcpgw.detectors import BUILTIN

        known = {*BUILTIN, *self.detectors}
        for i, rule in enumerate(self.rules):
            for name in rule.detectors:
                if name not in known:
                    raise ValueError(
                        f"rules[{i}] names detector {name!r}, which is neither built in "
                        f"({', '.join(sorted(BUILTIN))}) nor in [security.detectors]"
                    )
        return self


SamplingPolicy = Literal["auto", "llm", "relay", "deny"]
"""Who answers an upstream's sampling request: the client (`relay`), litellm (`llm`), the client when it
can sample and else litellm (`auto`), or nobody (`deny`)."""
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SamplingRoute(_Strict):
    """`[sampling.routes.NAME]`: one model reached through litellm."""

    model: str
    """A litellm model string, e.g. `openai/gpt-4o-mini` or `anthropic/claude-sonnet-4-5`."""
    api_base: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (read at first use, never logged)."""
    input_cost_per_token: Annotated[float, Field(ge=0)] | None = None
    output_cost_per_token: Annotated[float, Field(ge=0)] | None = None
    """Prices in USD for models litellm's price map does not know."""
    hints: list[str] = Field(default_factory=list)
    """Extra model-hint substrings that pick this route (its name and model always match)."""
    cost: Annotated[float, Field(ge=0, le=1)] = 0.5
    speed: Annotated[float, Field(ge=0, le=1)] = 0.5
    intelligence: Annotated[float, Field(ge=0, le=1)] = 0.5
    """How cheap, fast and capable the route is (0..1), weighed against a request's priorities."""
    timeout: Annotated[float, Field(gt=0)] | None = None
    """Seconds one call to this route may take before the next route is tried; `[sampling] timeout`
    when absent."""
    retries: Annotated[int, Field(ge=0, le=10)] | None = None
    """Retries of this route before falling back; `[sampling] retries` when absent."""

    @field_validator("model")
    @classmethod
    def _model_shape(cls, model: str) -> str:
        if "/" not in model or model.startswith("/") or model.endswith("/"):
            raise ValueError(f"model {model!r} must be a litellm model string 'provider/model'")
        return model

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not ENV_NAME_RE.match(name):
            raise ValueError(f"{name!r} is not an environment variable name (give the name, not the key)")
        return name


class SamplingScope(_Strict):
    """`[sampling.servers.NAME]` or `[sampling.personas.NAME]`: policy and limits for one of them."""

    policy: SamplingPolicy | None = None
    routes: list[str] | None = None
    """Routes this persona (or server) may use; all when absent."""
    tokens_per_day: Annotated[int, Field(gt=0)] | None = None
    usd_per_day: Annotated[float, Field(gt=0)] | None = None
    """Daily budgets (UTC days), per persona; a request once they are spent is refused unsent."""


class SamplingSettings(_Strict):
    """`[sampling]`: how mcpgw answers upstreams' sampling and elicitation requests."""

    policy: SamplingPolicy = "auto"
    elicitation: Literal["auto", "relay", "deny"] = "auto"
    """`auto`: elicitation requests go to clients that can answer; `relay` also declares elicitation to
    upstreams (so handshake-era servers offer their elicitation tools); `deny` refuses them."""
    routes: dict[str, SamplingRoute] = Field(default_factory=dict)
    fallbacks: list[str] | None = None
    """Ordered chain tried after the chosen route fails; all routes in file order when absent."""
    timeout: Annotated[float, Field(gt=0)] = 60.0
    """Seconds one model call may take before the next route is tried."""
    retries: Annotated[int, Field(ge=0, le=10)] = 0
    """Retries of a route before falling back."""
    cooldown: Annotated[float, Field(ge=0)] = 30.0
    """Seconds a failing route is skipped (litellm Router cooldown)."""
    max_rounds: Annotated[int, Field(ge=1, le=50)] = 10
    """Input-required rounds mcpgw fulfils for one 2026-07-28 call before giving up."""
    servers: dict[str, SamplingScope] = Field(default_factory=dict)
    personas: dict[str, SamplingScope] = Field(default_factory=dict)

    @field_validator("fallbacks")
    @classmethod
    def _fallbacks_known(cls, fallbacks: list[str] | None, info: ValidationInfo) -> list[str] | None:
        _routes_known(fallbacks, info.data.get("routes"), "")
        return fallbacks

    @field_validator("servers", "personas")
    @classmethod
    def _scopes_known(
        cls, scopes: dict[str, SamplingScope], info: ValidationInfo
    ) -> dict[str, SamplingScope]:
        for name, scope in scopes.items():
            _routes_known(scope.routes, info.data.get("routes"), f"{name}.routes ")
            if info.field_name == "servers" and (scope.tokens_per_day or scope.usd_per_day):
                raise ValueError(
                    f"{name}: budgets are per persona ([sampling.personas.NAME]), not per server"
                )
        return scopes


def _routes_known(names: list[str] | None, routes: dict[str, SamplingRoute] | None, where: str) -> None:
    for name in names or []:
        if routes is None or name not in routes:
            known = ", ".join(routes or {}) or "none are defined"
            raise ValueError(
                f"{where}names route {name!r}, which is not in [sampling.routes] (known: {known})"
            )


DEFAULT_PERSONA = "default"
PERSONA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Registry(_Strict):
    """The whole registry file."""

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    personas: dict[str, PersonaConfig] = Field(default_factory=dict)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    auth: AuthSettings | None = None
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)

    @model_validator(mode="after")
    def _auth_personas_exist(self) -> Registry:
        if self.auth is not None:
            for value, persona in self.auth.persona_map.items():
                if persona not in self.personas:
                    raise ValueError(
                        f"auth.persona_map maps {value!r} to {persona!r}, which is not a persona"
                    )
        return self

    @model_validator(mode="after")
    def _rules_name_personas(self) -> Registry:
        for i, rule in enumerate(self.security.rules):
            for persona in rule.personas or []:
                if persona not in self.personas:
                    raise ValueError(
                        f"security.rules[{i}] names persona {persona!r}, which is not in [personas]"
                    )
        return self

    @model_validator(mode="after")
    def _personas_name_servers(self) -> Registry:
        for name, persona in self.personas.items():
            if not PERSONA_NAME_RE.match(name):
                raise ValueError(f"persona name {name!r} must be letters, digits, '.', '-' or '_'")
            for server in persona.servers or []:
                if server not in self.servers:
                    raise ValueError(f"persona {name!r} names server {server!r}, which is not in [servers]")
            renamed = [o.name for o in persona.tools.values() if o.name]
            if len(renamed) != len(set(renamed)):
                raise ValueError(f"persona {name!r} renames two tools to the same name")
        return self

    @model_validator(mode="after")
    def _sampling_names_known(self) -> Registry:
        for server in self.sampling.servers:
            if server not in self.servers:
                raise ValueError(f"sampling.servers names server {server!r}, which is not in [servers]")
        for persona in self.sampling.personas:
            if persona not in self.personas and persona != DEFAULT_PERSONA:
                raise ValueError(f"sampling.personas names persona {persona!r}, which is not in [personas]")
        return self

    @field_validator("servers")
    @classmethod
    def _names_and_namespaces(cls, servers: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        seen: dict[str, str] = {}
        for name, server in servers.items():
            if not SERVER_NAME_RE.match(name):
                raise ValueError(f"server name {name!r} must be letters, digits, '-' or '_' (max 48)")
            namespace = namespace_of(name, server)
            if not server.enabled or namespace == "":
                continue
            if namespace in seen:
                raise ValueError(
                    f"servers {seen[namespace]!r} and {name!r} share the namespace {namespace!r}"
                )
            seen[namespace] = name
        return servers

    def enabled_servers(self) -> dict[str, ServerConfig]:
        return {name: server for name, server in self.servers.items() if server.enabled}


def namespace_of(name: str, server: ServerConfig) -> str:
    return name if server.namespace is None else server.namespace


def call_timeout(registry: Registry, server: ServerConfig) -> float:
    return server.timeout if server.timeout is not None else registry.gateway.timeout


# --- finding and loading the file ---------------------------------------------------------------


def default_path() -> Path:
    """Where the CLI reads and edits the registry when `--config` is not given."""
    if env := os.environ.get(ENV_CONFIG):
        return Path(env)
    return Path(DEFAULT_CONFIG_NAME)


def embedded_default_text() -> str:
    """The registry shipped inside the package: works on a fresh machine."""
    return resources.files("mcpgw").joinpath("default_servers.toml").read_text(encoding="utf-8")


def load(path: Path | None = None) -> tuple[Registry, Path | None]:
    """Load and validate the registry; `(registry, path)` with `path=None` for the embedded default.

    An explicit path that does not exist is an error; the default location
    falls back to the embedded registry so `mcpgw serve` works out of the box.
    """
    if path is None:
        candidate = default_path()
        if not candidate.exists() and ENV_CONFIG not in os.environ:
            return parse(embedded_default_text(), source="<embedded servers.toml>"), None
        path = candidate
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    return parse(text, source=str(path)), path


def parse(text: str, *, source: str) -> Registry:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=source) from exc
    return validate(data, source=source)


def validate(data: Mapping[str, Any], *, source: str) -> Registry:
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source) from None


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    problems = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"])
        reason = _reason(error)
        problems.append((key, reason))
    key, reason = problems[0]
    if len(problems) > 1:
        reason += "".join(f"\n  {k or '(top level)'}: {r}" for k, r in problems[1:])
    return ConfigError(reason, file=source, key=key or None)


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


# --- environment expansion ----------------------------------------------------------------------


def expand(value: str, *, key: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset variable without default is a `ConfigError`."""
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set", key=key)

    return _ENV_RE.sub(substitute, value)


def resolved_command(command: str) -> str:
    """A bare command is looked up on PATH, then beside the gateway's own Python (its venv's bin)."""
    if os.sep in command:
        return command
    import shutil

    found = shutil.which(command)
    if found:
        return found
    beside = shutil.which(command, path=str(Path(sys.executable).parent))
    return beside or command
