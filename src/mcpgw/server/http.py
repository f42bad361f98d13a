"""mcpgw served over streamable HTTP: `/mcp`, one endpoint per persona, and a health check.

Owns: the Starlette app (`http_app`) with `/mcp` for the default persona (or
everything), `/personas/<name>/mcp` for each persona (`PersonaEndpoint`: 404 for
an unknown one), `/healthz` for load balancers, the request body limit on every
route (`BodyLimit`), and `serve_http`, which runs it under uvicorn with the
gateway's own signal handling. The HTTP-side guards it installs live beside it:
`hostcheck` (Host and Origin), `auth` (OAuth resource server, CORS) and `resume`
(resumable SSE streams).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcpgw import _compat
from mcpgw.core.gateway import Gateway
from mcpgw.server.envelope import too_large
from mcpgw.server.handlers import PERSONA_PATH_PARAM, build_server
from mcpgw.server.hostcheck import transport_security
from mcpgw.server.lifecycle import check_personas, stop_on_signals

PERSONA_PATH = f"/personas/{{{PERSONA_PATH_PARAM}}}/mcp"


def http_app(gateway: Gateway, *, host: str) -> Any:
    """`/mcp` for the default persona (or everything), `/personas/<name>/mcp` for each persona."""
    server, _ = build_server(gateway)
    security = transport_security(gateway.registry, bind=host)
    from mcpgw.server import resume

    # As `server.streamable_http_app(...)`, plus an event store: dropped SSE streams can be resumed.
    app = resume.streamable_http_app(
        server, path="/mcp", security=security, max_body=gateway.registry.gateway.max_request_bytes
    )
    endpoint = next(r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/mcp")
    app.router.routes.append(Route(PERSONA_PATH, endpoint=PersonaEndpoint(gateway, endpoint)))
    app.router.routes.append(Route("/healthz", endpoint=_health(gateway), methods=["GET"]))
    app.add_middleware(BodyLimit, limit=gateway.registry.gateway.max_request_bytes)
    if gateway.registry.auth is not None or gateway.registry.gateway.cors_origins:
        from mcpgw.server import auth

        auth.install(app, gateway.registry, mcp_path="/mcp", persona_path=PERSONA_PATH, audit=gateway.audit)
    return app


class PersonaEndpoint:
    """The `/mcp` app behind a check of the persona in the path (an ASGI app, so every method routes)."""

    def __init__(self, gateway: Gateway, endpoint: Any) -> None:
        self._gateway = gateway
        self._endpoint = endpoint

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        personas = self._gateway.registry.personas
        name = scope.get("path_params", {}).get(PERSONA_PATH_PARAM)
        if name not in personas:
            known = sorted(personas)
            response = JSONResponse(
                {"error": f"unknown persona {name!r}", "personas": known}, status_code=404
            )
            await response(scope, receive, send)
            return
        await self._endpoint(scope, receive, send)


def _health(gateway: Gateway) -> Callable[[Any], Awaitable[JSONResponse]]:
    async def health(request: Any) -> JSONResponse:
        """For load balancers and monitors: 200 when every upstream is ready, else 503, with each state."""
        upstreams = {
            name: {
                "state": u.state,
                "protocol": u.protocol_version,
                "tools": len(u.lists["tools"]),
                "error": u.error,
            }
            for name, u in gateway.upstreams.items()
        }
        healthy = all(u["state"] == "ready" for u in upstreams.values())
        body = {"status": "ok" if healthy else "degraded", "upstreams": upstreams}
        return JSONResponse(body, status_code=200 if healthy else 503)

    return health


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 and a JSON-RPC error, never buffered whole.

    The SDK's own limit (given the same size) guards only the MCP endpoint and answers plain text;
    this one covers every route and answers in JSON-RPC, so clients can tell what happened.

    A declared Content-Length is checked up front; a chunked body is collected only up to the limit.
    """

    def __init__(self, app: Any, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) <= self.limit:
                await self.app(scope, receive, send)
            else:
                await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        response = JSONResponse(too_large(self.limit), status_code=413)
        await response(scope, receive, send)


async def serve_http(
    gateway: Gateway,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Serve streamable HTTP at http://host:port/mcp until a signal arrives."""
    import uvicorn

    from mcpgw.server import auth

    auth.check_exposure(gateway.registry, host=host)
    app = http_app(gateway, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    web = uvicorn.Server(config)
    # uvicorn would re-raise a caught SIGTERM after serving, killing us before the upstreams are
    # stopped; our own receiver below asks it to exit instead, and cleanup then runs in order.
    _compat.uvicorn_without_signal_capture(web)
    async with gateway.running(), anyio.create_task_group() as tg:

        def stop() -> None:
            web.should_exit = True

        async def announce() -> None:
            while not web.started:
                await anyio.sleep(0.02)
            sockets = [s for server in web.servers for s in server.sockets]
            bound = sockets[0].getsockname()[1] if sockets else port
            url = f"http://{_url_host(host)}:{bound}/mcp"
            if on_ready is not None:
                await on_ready(url)

        tg.start_soon(stop_on_signals, gateway, stop)
        tg.start_soon(check_personas, gateway)
        tg.start_soon(announce)
        await web.serve()
        tg.cancel_scope.cancel()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
