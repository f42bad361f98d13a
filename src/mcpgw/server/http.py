"""mcpgw served over streamable HTTP: `/mcp`, one endpoint per persona, and a health check.

Owns: the Starlette app (`http_app`) with `/mcp` for the default persona (or
everything), `/personas/<name>/mcp` for each persona (`PersonaEndpoint`: 404 for
an unknown one, naming none of the others), `/healthz` for load balancers,
`/metrics` for Prometheus (`scrape`; unless they have a listener of their own), and
`serve_http`, which runs it under uvicorn with the gateway's own signal handling
and its bounds on slow or large request headers and idle connections. The
HTTP-side guards it installs live beside it, outermost first: `hostcheck` (Host
and Origin, on every route), `auth` (CORS, OAuth resource server), `edge`
(request bodies: size, deadline, nesting), `sessions` (bounded handshake-era
sessions) and `resume` (resumable SSE streams).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcpgw import _compat
from mcpgw.core.gateway import Gateway
from mcpgw.server import scrape
from mcpgw.server.edge import BodyLimit
from mcpgw.server.handlers import PERSONA_PATH_PARAM, build_server
from mcpgw.server.hostcheck import HostCheck, transport_security
from mcpgw.server.lifecycle import check_personas, stop_on_signals
from mcpgw.server.sessions import SessionLimits

logger = logging.getLogger("mcpgw.http")

PERSONA_PATH = f"/personas/{{{PERSONA_PATH_PARAM}}}/mcp"
KEEP_ALIVE_SECONDS = 5
"""How long an idle keep-alive connection stays open between requests (uvicorn's default, kept)."""
MAX_HEADER_BYTES = 64 * 1024
"""The most a request's headers may take (a bearer JWT is a few KiB); more gets 431."""


def http_app(gateway: Gateway, *, host: str) -> Any:
    """`/mcp` for the default persona (or everything), `/personas/<name>/mcp` for each persona."""
    server, _ = build_server(gateway)
    settings = gateway.registry.gateway
    security = transport_security(gateway.registry, bind=host)
    from mcpgw.server import resume

    # As `server.streamable_http_app(...)`, plus an event store (dropped SSE streams can be
    # resumed) and bounded sessions.
    app = resume.streamable_http_app(
        server,
        path="/mcp",
        security=security,
        max_body=settings.max_request_bytes,
        max_sessions=settings.max_sessions,
        per_client=settings.max_sessions_per_client,
        idle_timeout=settings.session_idle_timeout,
    )
    endpoint = next(r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/mcp")
    app.router.routes.append(Route(PERSONA_PATH, endpoint=PersonaEndpoint(gateway, endpoint)))
    app.router.routes.append(Route("/healthz", endpoint=_health(gateway), methods=["GET"]))
    metrics = gateway.metrics
    if metrics is not None:
        if isinstance(endpoint, SessionLimits):
            metrics.track_sessions("http", lambda: endpoint.open)
        if gateway.registry.telemetry.metrics_port is None:  # else on a listener of its own
            app.router.routes.append(scrape.metrics_route(metrics))
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, timeout=settings.request_body_timeout)
    if gateway.registry.auth is not None or settings.cors_origins:
        from mcpgw.server import auth

        auth.install(
            app,
            gateway.registry,
            mcp_path="/mcp",
            persona_path=PERSONA_PATH,
            audit=gateway.audit,
            metrics=gateway.metrics,
        )
    # Added last, so outermost: nothing (not even the body limit) answers a rebound page.
    app.add_middleware(HostCheck, settings=security)
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
            # Which personas exist is for the log, not for whoever guesses at names.
            logger.info("unknown persona %r asked for; configured: %s", name, ", ".join(sorted(personas)))
            await JSONResponse({"error": f"unknown persona {name!r}"}, status_code=404)(scope, receive, send)
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
    settings = gateway.registry.gateway
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # its lines go through the gateway's own log (and its format)
        lifespan="on",
        http=_compat.http_protocol(
            header_timeout=settings.request_header_timeout, max_header_bytes=MAX_HEADER_BYTES
        ),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    web = uvicorn.Server(config)
    # uvicorn would re-raise a caught SIGTERM after serving, killing us before the upstreams are
    # stopped; our own receiver below asks it to exit instead, and cleanup then runs in order.
    _compat.uvicorn_without_signal_capture(web)
    async with scrape.listening(gateway), gateway.running(), anyio.create_task_group() as tg:

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
