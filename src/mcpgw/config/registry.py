"""The whole registry file: finding it, loading it, validating it.

Owns: `Registry` (the root model and the checks that cross tables), where the file is found
(`--config`, `$MCPGW_CONFIG`, `./servers.toml`, else the copy shipped in the package), and the one
boundary where TOML and pydantic errors become a `ConfigError` naming the file, the key and the
reason (also for one server entry validated alone, `server_config`). Editing the file (keeping
comments and order) belongs to `config.edit`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, get_args

from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator

from mcpgw.config.admin import AdminSettings
from mcpgw.config.base import DEFAULT_PERSONA, PERSONA_NAME_RE, SERVER_NAME_RE, Strict
from mcpgw.config.cluster import ClusterSettings, LimitSettings
from mcpgw.config.servers import HttpServer, ServerConfig, SseServer, Transport, namespace_of
from mcpgw.config.settings import (
    AuditSettings,
    AuthSettings,
    GatewaySettings,
    PersonaConfig,
    SamplingSettings,
    SecuritySettings,
)
from mcpgw.config.telemetry import TelemetrySettings
from mcpgw.config.workflows import WorkflowConfig, check_registry
from mcpgw.errors import ConfigError

DEFAULT_CONFIG_NAME = "servers.toml"
ENV_CONFIG = "MCPGW_CONFIG"


class Registry(Strict):
    """The whole registry file."""

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    personas: dict[str, PersonaConfig] = Field(default_factory=dict)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    auth: AuthSettings | None = None
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    workflows: dict[str, WorkflowConfig] = Field(default_factory=dict)
    cluster: ClusterSettings | None = None
    limits: LimitSettings = Field(default_factory=LimitSettings)

    @model_validator(mode="after")
    def _limits_name_personas(self) -> Registry:
        for persona in self.limits.personas:
            if persona not in self.personas and persona != DEFAULT_PERSONA:
                raise ValueError(f"limits.personas names persona {persona!r}, which is not in [personas]")
        return self

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
    def _per_user_logins_need_auth(self) -> Registry:
        for name, server in self.servers.items():
            if (
                not isinstance(server, HttpServer | SseServer)
                or server.login is None
                or not server.login.per_user
            ):
                continue
            if self.auth is None:
                raise ValueError(
                    f"servers.{name}.login.per_user needs [auth]: each caller is known by its token "
                    "(and the login comes back to [auth] public_url)"
                )
            if not server.takes_login():
                raise ValueError(
                    f"servers.{name}.login.per_user: the server has its own credentials "
                    "(`oauth` or an Authorization header), which every caller would share"
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

    @field_validator("workflows")
    @classmethod
    def _workflows_fit(
        cls, workflows: dict[str, WorkflowConfig], info: ValidationInfo
    ) -> dict[str, WorkflowConfig]:
        check_registry(workflows, info.data.get("servers") or {})
        return workflows

    def enabled_servers(self) -> dict[str, ServerConfig]:
        return {name: server for name, server in self.servers.items() if server.enabled}


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
        raise _config_error(exc, file=source) from None


_SERVER_ENTRY = TypeAdapter[ServerConfig](ServerConfig)


def server_config(fields: Mapping[str, Any], *, key: str) -> ServerConfig:
    """One server entry validated on its own (`mcpgw add-server`, imports), as the registry would.

    `key` says where the entry comes from (`servers.NAME`); a `ConfigError` names it and the field.
    """
    try:
        return _SERVER_ENTRY.validate_python(fields)
    except ValidationError as exc:
        raise _config_error(exc, within=key) from None


def _config_error(exc: ValidationError, *, file: str | None = None, within: str | None = None) -> ConfigError:
    problems = []
    for error in exc.errors(include_url=False):
        parts = _key_parts(error["loc"], entry=within is not None)
        key = ".".join([within, *parts] if within else parts)
        problems.append((key, _reason(error)))
    key, reason = problems[0]
    if len(problems) > 1:
        reason += "".join(f"\n  {k or '(top level)'}: {r}" for k, r in problems[1:])
    return ConfigError(reason, file=file, key=key or None)


def _key_parts(loc: tuple[str | int, ...], *, entry: bool) -> list[str]:
    """The keys as written in the file: pydantic puts the tag of a server's model (`stdio`, `http`,
    `sse`) after `servers.NAME` (or first, for an entry validated alone); the file has no such key."""
    parts = [str(part) for part in loc]
    at = 0 if entry else 2 if parts[:1] == ["servers"] else None
    if at is not None and len(parts) > at and parts[at] in get_args(Transport):
        del parts[at]
    return parts


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
