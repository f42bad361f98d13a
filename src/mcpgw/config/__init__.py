"""The registry file, `servers.toml`, as validated pydantic models.

The package re-exports its public API, so `from mcpgw.config import Registry` is the one
import users need. Its modules, from the bottom up:

    base       the strict base model and the naming rules (servers, namespaces, tools, personas)
    env        `${VAR}` expansion and command lookup
    servers    `[servers.NAME]`: one upstream server, a union of stdio, HTTP, SSE and OpenAPI models
    oauth      `[servers.NAME.oauth]` and `.login`: how mcpgw gets a token for an upstream
    settings   `[gateway]`, `[personas]`, `[audit]`, `[auth]`, `[security]`, `[sampling]`
    telemetry  `[telemetry]`: metrics and the gateway's own log format
    admin      `[admin]`: the web console
    expressions  the workflow expression language (`{{ steps[0].result.field }}`)
    workflows  `[workflows.NAME]`: tools whose steps call other tools
    cluster    `[cluster]` (shared state on Redis) and `[limits]` (rate limits)
    registry   the root `Registry`; finding, loading and validating the file; `ConfigError`s
    edit       comment-keeping edits of the file; Claude Desktop import (imported on its own)
"""

from mcpgw.config.admin import AdminSettings
from mcpgw.config.base import (
    DEFAULT_PERSONA,
    NAMESPACE_RE,
    PERSONA_NAME_RE,
    SEPARATOR,
    SERVER_NAME_RE,
    TOOL_NAME_RE,
)
from mcpgw.config.cluster import ClusterSettings, LimitSettings, RateLimit
from mcpgw.config.env import expand, resolved_command
from mcpgw.config.oauth import UpstreamLogin, UpstreamOAuth
from mcpgw.config.registry import (
    DEFAULT_CONFIG_NAME,
    ENV_CONFIG,
    Registry,
    call_timeout,
    default_path,
    embedded_default_text,
    load,
    parse,
    server_config,
    validate,
)
from mcpgw.config.servers import (
    HTTP_METHODS,
    Era,
    HttpServer,
    OpenApiParams,
    OpenApiServer,
    ServerConfig,
    SseServer,
    StdioServer,
    Transport,
    UrlParams,
    namespace_of,
)
from mcpgw.config.settings import (
    ASYMMETRIC_ALGORITHMS,
    DETECTOR_NAME_RE,
    DIRECTIONS,
    ENV_NAME_RE,
    AuditSettings,
    AuthSettings,
    DataRule,
    Direction,
    Filter,
    GatewaySettings,
    Mode,
    PersonaConfig,
    SamplingPolicy,
    SamplingRoute,
    SamplingScope,
    SamplingSettings,
    SecuritySettings,
    ToolOverride,
)
from mcpgw.config.telemetry import TelemetrySettings
from mcpgw.config.workflows import WorkflowConfig, WorkflowStep

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_PERSONA",
    "DETECTOR_NAME_RE",
    "DIRECTIONS",
    "ENV_CONFIG",
    "ENV_NAME_RE",
    "HTTP_METHODS",
    "NAMESPACE_RE",
    "PERSONA_NAME_RE",
    "SEPARATOR",
    "SERVER_NAME_RE",
    "TOOL_NAME_RE",
    "AdminSettings",
    "AuditSettings",
    "AuthSettings",
    "ClusterSettings",
    "DataRule",
    "Direction",
    "Era",
    "Filter",
    "GatewaySettings",
    "HttpServer",
    "LimitSettings",
    "Mode",
    "OpenApiParams",
    "OpenApiServer",
    "PersonaConfig",
    "RateLimit",
    "Registry",
    "SamplingPolicy",
    "SamplingRoute",
    "SamplingScope",
    "SamplingSettings",
    "SecuritySettings",
    "ServerConfig",
    "SseServer",
    "StdioServer",
    "TelemetrySettings",
    "ToolOverride",
    "Transport",
    "UpstreamLogin",
    "UpstreamOAuth",
    "UrlParams",
    "WorkflowConfig",
    "WorkflowStep",
    "call_timeout",
    "default_path",
    "embedded_default_text",
    "expand",
    "load",
    "namespace_of",
    "parse",
    "resolved_command",
    "server_config",
    "validate",
]
