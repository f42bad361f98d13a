"""`[limits]` where requests arrive: HTTP 429 with `Retry-After` at the edge, an MCP error elsewhere.

Owns: `RateLimits`, the ASGI middleware in front of the MCP endpoints that admits each call
(`tools/call`, `resources/read`, `prompts/get`, `completion/complete`, in either era) through the
gateway's `cluster.limits.Limiter` before the SDK reads it, and refuses one over a limit with 429,
a `Retry-After` header and a JSON-RPC error body (code -32029, `data.retryAfter`) carrying the
request's id, so a plain HTTP client and an MCP client can both tell what happened; and
`limited`, the server middleware that applies the same limits to requests that did not come
through HTTP (stdio), as an MCP error with the same code and data. The call holds its slot in
flight until its answer has been sent (for a streamed answer, until the stream ends).

The persona is the one the URL names (`/personas/<name>/mcp`); the principal is the token's under
`[auth]`, else the client's address (the `X-Forwarded-For` one behind a proxy on this machine).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core
from mcp.server.context import ServerMiddleware, ServerRequestContext
from mcp.shared.exceptions import MCPError
from starlette.responses import JSONResponse

from mcpgw.cluster.limits import Limiter
from mcpgw.core.gateway import Gateway
from mcpgw.errors import RateLimited
from mcpgw.server.edge import replaying

COUNTED = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
"""The requests a limit counts: the ones that reach an upstream. Listings are answered from memory."""
ADMITTED = "mcpgw.limits.admitted"
"""Set in the ASGI scope of a request the HTTP edge admitted, so the server middleware lets it be."""
_PERSONA_PATH = re.compile(r"^/personas/([^/]+)/mcp/?$")
_MCP_PATHS = ("/mcp", "/mcp/")


def _method_and_id(body: bytes) -> tuple[str | None, Any]:
    try:
        message = pydantic_core.from_json(body)
    except ValueError:
        return None, None  # the SDK answers a body it cannot parse
    if not isinstance(message, dict):
        return None, None
    method = message.get("method")
    return (method if isinstance(method, str) else None), message.get("id")


def refusal_body(exc: RateLimited, request_id: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": exc.jsonrpc_code, "message": str(exc), "data": exc.data},
    }


class RateLimits:
    """ASGI middleware: each call to an MCP endpoint admitted by the limiter, or answered 429."""

    def __init__(self, app: Any, *, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not self.limiter.active:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        named = _PERSONA_PATH.match(path)
        if not named and path not in _MCP_PATHS:
            await self.app(scope, receive, send)
            return
        # `edge.BodyLimit` (outside this) has read the body whole and hands it on as one message.
        first = await receive()
        method, request_id = _method_and_id(first.get("body", b""))
        replay = replaying(first, receive)

        if method not in COUNTED:
            await self.app(scope, replay, send)
            return
        try:
            # Imported here: `sessions` brings the HTTP auth stack, which a stdio gateway never loads.
            from mcpgw.server.sessions import client_of

            ticket = await self.limiter.admit(named.group(1) if named else None, client_of(scope))
        except RateLimited as exc:
            headers = {"Retry-After": str(exc.retry_after)}
            await JSONResponse(refusal_body(exc, request_id), status_code=429, headers=headers)(
                scope, replay, send
            )
            return
        scope[ADMITTED] = True
        try:
            await self.app(scope, replay, send)
        finally:
            await self.limiter.release(ticket)


def limited(
    gateway: Gateway,
    persona_of: Callable[[ServerRequestContext[Any, Any]], str | None],
    *,
    limiter: Limiter | None = None,
) -> ServerMiddleware[Any]:
    """Server middleware: the limits on calls that did not pass the HTTP edge (stdio); `limiter`
    shared with that edge, else one of its own."""
    limiter = limiter or Limiter(lambda: gateway.registry.limits, cluster=gateway.cluster)

    async def middleware(
        ctx: ServerRequestContext[Any, Any], call_next: Callable[..., Awaitable[Any]]
    ) -> Any:
        if ctx.method not in COUNTED or not limiter.active:
            return await call_next(ctx)
        scope = getattr(ctx.request, "scope", None)
        if isinstance(scope, dict) and scope.get(ADMITTED):
            return await call_next(ctx)
        try:
            ticket = await limiter.admit(persona_of(ctx), None)
        except RateLimited as exc:
            raise MCPError(code=exc.jsonrpc_code, message=str(exc), data=exc.data) from exc
        try:
            return await call_next(ctx)
        finally:
            await limiter.release(ticket)

    return middleware
