"""What every HTTP request's header values and body must satisfy before any route or the SDK reads them.

Owns: `stripped`, header values as RFC 9110 defines them (without the whitespace
around them), which the outermost middleware (`hostcheck.HostCheck`) hands on; `BodyLimit`, the
middleware that reads every POST body before a route does: at most
`[gateway] max_request_bytes` (else 413), all of it within
`[gateway] request_body_timeout` seconds of its headers (else 408, and the
connection is closed, so a client trickling a byte a second cannot hold it),
and JSON nested no deeper than the SDK's own parser takes (else 400 -32700, on
both protocol eras alike); and `jsonrpc_error`, the JSON-RPC error answers the
HTTP side writes itself.

Slow or oversized request *headers* are bounded by the server (uvicorn) before
any ASGI app runs: see `_compat.http_protocol`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
import pydantic_core
from starlette.responses import JSONResponse

from mcpgw.server.envelope import too_large
from mcpgw.upstream.deadlines import Deadlines

logger = logging.getLogger("mcpgw.http")

DEPTH_CHECKED_FROM = 128
"""Bodies with fewer opening brackets than this cannot be nested too deep and are not parsed here.

The SDK parses a handshake-era body with pydantic_core, which refuses nesting past about 200 levels
("recursion limit exceeded"); a 2026-07-28 body it parses with `json.loads`, which goes deeper,
into code (the gateway's among it) that recurses per level. Checking at the edge with the same
parser holds both eras to the one limit, and a body of ordinary shape never pays for it."""
_TOO_DEEP = "recursion limit exceeded"
"""How pydantic_core (2.x) says a document is nested past its limit."""


def jsonrpc_error(
    status: int, code: int, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An HTTP answer carrying a JSON-RPC error without an id (the request was not read as one)."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


OWS = b" \t"
"""Optional whitespace (RFC 9110 §5.6.3): space and horizontal tab."""


def stripped(scope: Any) -> Any:
    """`scope` with every header value without its leading and trailing whitespace.

    RFC 9110 §5.5 says the whitespace around a field value is not part of it, and h11 strips it,
    but httptools (uvicorn's default parser, the one `serve_http` runs) keeps trailing whitespace:
    `Mcp-Name: route ` then failed the SDK's exact comparison with the body (400). Stripped before
    any check reads a header (`Host` included, `hostcheck.HostCheck(field_values=True)`), every value
    is what HTTP says it is, whichever parser is in front. Values whose edge whitespace matters
    (`Mcp-Param-*`) are sent base64-encoded by the spec for exactly this reason."""
    return {**scope, "headers": [(k, v.strip(OWS)) for k, v in scope["headers"]]}


class BodyLimit:
    """ASGI middleware: a POST body is read whole, within a size, a deadline and a nesting depth.

    The SDK's own size limit (given the same size) guards only the MCP endpoint and answers
    plain text; this one covers every route and answers in JSON-RPC, so clients can tell what
    happened. A declared Content-Length is checked up front; otherwise the body is counted as
    it arrives and never buffered past the limit. The body read here is handed on as one
    message, so what follows reads it at once.
    """

    def __init__(self, app: Any, *, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self._deadlines = Deadlines()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = _last(scope.get("headers") or (), b"content-length")
        if declared is not None and not (declared.isdigit() and int(declared) <= self.limit):
            await self._too_large(scope, receive, send)
            return
        try:
            # One timer for all requests' bodies (`upstream.deadlines`), not anyio's cancel scope or a
            # timer of each request's own: what runs under it is the server's `receive` alone.
            with self._deadlines.limit(self.timeout):
                body = await self._read(receive)
        except TimeoutError:
            logger.info(
                "closed a connection from %s: its request body took over %ss",
                _peer(scope),
                self.timeout,
            )
            response = jsonrpc_error(
                408,
                types.INVALID_REQUEST,
                f"Request timeout: the body took over {self.timeout:g}s ([gateway] request_body_timeout)",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        if body is None:
            return  # the client went away
        if len(body) > self.limit:
            await self._too_large(scope, receive, send)
            return
        problem = _nesting_problem(body)
        if problem is not None:
            await jsonrpc_error(400, types.PARSE_ERROR, f"Parse error: {problem}")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Any) -> bytes | None:
        """The whole body (or its first bytes past the limit); None if the client went away."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.limit or not message.get("more_body"):
                return b"".join(chunks)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        response = JSONResponse(too_large(self.limit), status_code=413)
        await response(scope, receive, send)


def _nesting_problem(body: bytes) -> str | None:
    """Why `body` is nested too deep to be read, or None (also for JSON broken otherwise:
    the SDK answers that as it always has)."""
    if body.count(b"[") + body.count(b"{") < DEPTH_CHECKED_FROM:
        return None
    try:
        pydantic_core.from_json(body)
    except ValueError as exc:
        if _TOO_DEEP in str(exc):
            return str(exc)
    return None


def _last(headers: Any, name: bytes) -> Any:
    """The last value of header `name` (as a dict of the header lines holds it)."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def _peer(scope: Any) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def replaying(first: Any, receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """`receive` that gives `first` (the body message `BodyLimit` handed on whole, already read by a
    layer that looked into it) once more before the rest."""
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return replay
