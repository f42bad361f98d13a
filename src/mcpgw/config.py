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
    mode: Mode = "prototype"
    """`production` turns security warnings (unpinned tools, poisoning, no auth) into refusals."""


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
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)

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
