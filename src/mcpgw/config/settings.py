"""The settings tables of the registry besides its servers.

Owns: `[gateway]`, `[personas.NAME]` (filters and tool overrides), `[audit]`, `[auth]`,
`[security]` (detectors and data rules) and `[sampling]` (routes, scopes, budgets), each a
strict model whose validators check what can be checked within the table. Checks that cross
tables (a persona naming a server) belong to `registry.Registry`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mcpgw.config.base import TOOL_NAME_RE, Strict
from mcpgw.config.flows import FlowPolicy, FlowSettings

Mode = Literal["prototype", "production"]
"""`prototype`: security findings are warnings; `production`: they are refusals."""


class GatewaySettings(Strict):
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
    tokens_dir: str | None = None
    """Where `mcpgw login` keeps upstream OAuth tokens, one owner-only file per server
    (default: `$XDG_STATE_HOME/mcpgw/tokens`, else `~/.local/state/mcpgw/tokens`)."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """HTTP `Host` values accepted besides loopback (`name`, `name:port`, `name:*`); against DNS rebinding."""
    allowed_origins: list[str] = Field(default_factory=list)
    """HTTP `Origin` values accepted besides loopback ones (`https://app.example.com`, `http://name:*`)."""
    max_sessions: Annotated[int, Field(ge=1)] = 4096
    """Handshake-era HTTP sessions open at once; past it, the least recently used idle one is closed."""
    max_sessions_per_client: Annotated[int, Field(ge=1)] = 256
    """Sessions one client (its token's principal under `[auth]`, else its address) may hold; past it,
    its own least recently used idle one is closed."""
    session_idle_timeout: Annotated[float, Field(gt=0)] = 600.0
    """Seconds a handshake-era HTTP session may go with no request in flight (and no open GET stream)
    before it is closed; its client then starts a new one."""
    request_header_timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds an HTTP client has to send a request's headers, from connecting or from the last answer."""
    request_body_timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds an HTTP client has to send a request's body once its headers are in; else 408."""

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


class Filter(Strict):
    """Glob rules over exposed names (or URIs): allowed unless denied; deny wins."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)


class ToolOverride(Strict):
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


class PersonaConfig(Strict):
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
    flows: FlowPolicy | None = None
    """This persona's flow policy; each key absent falls back to `[security.flows]`."""


class AuditSettings(Strict):
    """`[audit]`: the audit log, in a SQLite file (the default) or a PostgreSQL database (`url`)."""

    enabled: bool = True
    path: str | None = None
    """Database file; default $MCPGW_AUDIT_DB, else ~/.local/share/mcpgw/audit.db."""
    url: str | None = None
    """`postgresql://user@host:port/dbname`: the log in PostgreSQL instead, shared by several gateways
    (`${VAR}` is expanded; libpq's PGPASSWORD and ~/.pgpass work too)."""
    retention_days: Annotated[float, Field(ge=0)] = 30
    """Rows older than this are deleted when the gateway starts; 0 keeps everything."""
    max_buffer: Annotated[int, Field(ge=1000)] = 100_000
    """Rows kept in memory while the disk fails; beyond this they are dropped and counted."""
    instance: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Names this gateway in every row's `instance` column (`${VAR}` expanded, e.g. `${HOSTNAME}`);
    default: the registry file's path, after the host name with a `url`."""
    durable: Literal["refusals", "all"] = "refusals"
    """Rows committed before their request is answered: refusals and security events, or `all`:
    every request's too, so a replica killed with SIGKILL loses no row of an answered request
    (each answer waits for a commit it shares with the requests in flight)."""
    redact_keys: list[str] = Field(default_factory=list)
    """Extra argument names whose values are never stored (password, token, ... always are)."""
    redact_patterns: list[str] = Field(default_factory=list)
    """Extra regular expressions replaced wherever they match."""

    @field_validator("url")
    @classmethod
    def _url_is_postgresql(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a PostgreSQL URL: postgresql://user@host:port/dbname")
        return url

    @model_validator(mode="after")
    def _one_store(self) -> AuditSettings:
        if self.url is not None and self.path is not None:
            raise ValueError("give `path` (a SQLite file) or `url` (PostgreSQL), not both")
        return self

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


class AuthSettings(Strict):
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


class DataRule(Strict):
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


class SecuritySettings(Strict):
    """`[security]`: pinned definitions, poisoning checks and data rules."""

    lock: str | None = None
    """The lock file of pinned definitions; default: the registry's name with `.lock` (servers.lock)."""
    max_description: Annotated[int, Field(ge=1)] = 4000
    """Longer descriptions (tools, prompts, resources, schema fields) are flagged as possible poisoning.
    The same default as `security.poisoning.DEFAULT_MAX_DESCRIPTION` (config cannot import it)."""
    detectors: dict[str, str] = Field(default_factory=dict)
    """Custom detectors: name -> regular expression."""
    rules: list[DataRule] = Field(default_factory=list)
    flows: FlowSettings | None = None
    """Flow policies across a session (`security.flows`); off when absent and no persona has any."""

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


class SamplingRoute(Strict):
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


class SamplingScope(Strict):
    """`[sampling.servers.NAME]` or `[sampling.personas.NAME]`: policy and limits for one of them."""

    policy: SamplingPolicy | None = None
    routes: list[str] | None = None
    """Routes this persona (or server) may use; all when absent."""
    tokens_per_day: Annotated[int, Field(gt=0)] | None = None
    usd_per_day: Annotated[float, Field(gt=0)] | None = None
    """Daily budgets (UTC days), per persona; a request once they are spent is refused unsent."""


class SamplingSettings(Strict):
    """`[sampling]`: how mcpgw answers upstreams' sampling and elicitation requests."""

    policy: SamplingPolicy = "auto"
    elicitation: Literal["auto", "relay", "deny"] = "auto"
    """`auto` (or `relay`, the same since elicitation is declared by default): elicitation is declared
    to upstreams and their requests go to clients that can answer; `deny` declares nothing and
    refuses them."""
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
