"""The one error tree of mcpgw.

Every error the gateway raises on purpose is a `GatewayError`. Each subclass
knows the JSON-RPC code a downstream client receives and the exit code the CLI
returns, so the two places a user sees an error (an MCP error from the server,
a message from the CLI) never have to guess.

    GatewayError                      (-32603 / exit 1)
    ├── ConfigError                   a bad servers.toml: file, key, reason (exit 2)
    ├── RegistryError                 an edit the registry refuses (exit 2)
    ├── StartupError                  `serve` cannot start: port taken, address invalid (exit 2)
    ├── DraftError                    a persona draft cannot be made: no route, not a proposal (exit 2)
    ├── UpstreamError                 an upstream failed; names the server (exit 3)
    │   ├── UpstreamUnavailable       not connected / failed to start
    │   │   └── NeedsLogin            answered 401: `mcpgw login SERVER` is due
    │   └── UpstreamTimeout           a call exceeded its timeout
    ├── NotFound                      unknown tool, resource or prompt (-32602)
    │   ├── ResourceNotFound          unknown resource URI, named in `data`
    │   └── UnknownPersona            a persona not in the registry (404 on HTTP)
    ├── InvalidRequest                bad arguments from the client (-32602)
    ├── Unavailable                   the gateway takes no new requests (shutting down)
    │   └── SharedStateUnavailable    `[cluster]`'s Redis cannot be reached
    ├── RateLimited                   a `[limits]` rate limit refused a call (-32029, HTTP 429)
    ├── DataBlocked                   a data rule refused a call or withheld a result (-32030)
    ├── WorkflowError                 a workflow tool stopped: names the step (a tool error to clients)
    └── SamplingError                 an upstream's sampling/elicitation request not answered
        ├── SamplingRefused           denied by policy, budget spent, client cannot answer
        └── SamplingFailed            every route failed, or a route cannot be used

Errors from other libraries are translated into these at one boundary each:
mcp client errors in `upstream`, TOML and pydantic errors in `config`, litellm
errors in `sampling`.
"""

from __future__ import annotations

from typing import ClassVar

from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST


class GatewayError(Exception):
    """Base of every error mcpgw raises on purpose."""

    jsonrpc_code: ClassVar[int] = INTERNAL_ERROR
    exit_code: ClassVar[int] = 1
    data: object = None
    """The JSON-RPC error's `data`, when there is one to pass on (an upstream's own)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(GatewayError):
    """The registry file cannot be used: names the file, the key and the reason."""

    exit_code = 2

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {reason}" if where else reason)
        self.file = file
        self.key = key
        self.reason = reason


class RegistryError(GatewayError):
    """A registry edit that is refused (name collision, unknown server, ...)."""

    exit_code = 2


class StartupError(GatewayError):
    """The gateway cannot start serving (its port is taken, its address cannot be bound)."""

    exit_code = 2


class DraftError(GatewayError):
    """`mcpgw personas draft` cannot draft: no sampling route, or the model's answer is not a proposal."""

    exit_code = 2


class UpstreamError(GatewayError):
    """An upstream server failed; the message always names the server."""

    exit_code = 3

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"upstream '{server}': {message}")
        self.server = server
        self.reason = message


class UpstreamUnavailable(UpstreamError):
    """The upstream is not connected (failed to start, or died)."""


class NeedsLogin(UpstreamUnavailable):
    """The upstream answered 401: its OAuth login is missing, expired past refreshing, or revoked."""

    marker: ClassVar[str] = "needs login: run `mcpgw login"
    """How the message starts after the server's name (an upstream's state keeps the text only)."""

    def __init__(self, server: str) -> None:
        super().__init__(server, f"{self.marker} {server}`")


class UserLoginRequired(UpstreamUnavailable):
    """A `per_user` server the caller has not logged in to (or whose login it refused): the
    message carries the caller's own login link."""

    def __init__(self, server: str, url: str) -> None:
        super().__init__(
            server,
            f"log in to it first (once, as yourself): open {url} and approve, then call again "
            "(the link works for 10 minutes)",
        )
        self.url = url


class UrlElicitationRequired(UserLoginRequired):
    """`UserLoginRequired` for a handshake-era client that takes URL elicitations: -32042 with the
    login link as the elicitation (2025-11-25; removed in 2026-07-28)."""

    jsonrpc_code = -32042

    def __init__(self, server: str, url: str, *, elicitation_id: str) -> None:
        super().__init__(server, url)
        message = f"Log in to {server} to use it through mcpgw"
        self.data = {
            "elicitations": [{"mode": "url", "elicitationId": elicitation_id, "url": url, "message": message}]
        }


class UpstreamTimeout(UpstreamError):
    """A request to the upstream took longer than its timeout."""


class NotFound(GatewayError):
    """A tool, resource or prompt that the catalog does not hold."""

    jsonrpc_code = INVALID_PARAMS


class ResourceNotFound(NotFound):
    """A resource URI the catalog does not hold: its `data` names the URI (SEP-2164)."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"Unknown resource: {uri}")
        self.data = {"uri": uri}


class InvalidRequest(GatewayError):
    """The client's request is malformed (bad arguments, bad URI)."""

    jsonrpc_code = INVALID_PARAMS


class UnknownPersona(NotFound):
    """A persona name that the registry does not define."""

    exit_code = 2


class Unavailable(GatewayError):
    """The gateway cannot take the request now: it is draining in-flight calls before it stops."""


class DataBlocked(GatewayError):
    """A data rule refused arguments, a result or a sampling request (names detectors, never values)."""

    jsonrpc_code = -32030
    """In the JSON-RPC range reserved for implementation-defined server errors."""


class WorkflowError(GatewayError):
    """A workflow tool could not go on: a step refused or failed, an expression pointing at nothing.

    The client gets it as the workflow's tool error (`isError`), naming the step, not as a JSON-RPC
    error: a model calling the workflow reads it and can correct its input.
    """


class SamplingError(GatewayError):
    """An upstream's sampling or elicitation request that mcpgw could not answer."""


class SamplingRefused(SamplingError):
    """Refused before anything was sent: policy `deny`, a spent budget, a client that cannot answer."""

    jsonrpc_code = INVALID_REQUEST


class SamplingFailed(SamplingError):
    """The model could not be reached: every route failed, or a route lacks its API key."""


class RateLimited(GatewayError):
    """A `[limits]` rate limit refused the call before anything was sent; `data` says when to retry."""

    jsonrpc_code = -32029
    """In the implementation-defined server error range; HTTP's own answer for it is 429."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.data = {"retryAfter": retry_after}


class SharedStateUnavailable(Unavailable):
    """`[cluster]`'s Redis cannot be reached: what needs shared state (limits, budgets) is refused."""
