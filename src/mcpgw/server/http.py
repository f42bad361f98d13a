"""mcpgw served over streamable HTTP: `/mcp`, one endpoint per persona, and a health check.

Owns: the Starlette app (`http_app`) with `/mcp` for the default persona (or
everything), `/personas/<name>/mcp` for each persona (`PersonaEndpoint`: 404 for
an unknown one, naming none of the others), `/healthz` for load balancers (and
what the last registry reload did), `/metrics` for Prometheus (`scrape`; unless
they have a listener of their own), and `serve_http`, which runs it under
uvicorn with the gateway's own signal handling and its bounds on slow or large
request headers and idle connections. The HTTP-side guards it installs live
beside it, outermost first: `hostcheck` (header values as HTTP defines them,
then Host and Origin, on every route), `auth` (CORS, OAuth resource server),
`edge` (request bodies: size, deadline, nesting), `sessions` (bounded
handshake-era sessions) and `resume` (resumable SSE streams).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from mcpgw import _compat
from mcpgw.cluster.limits import Limiter
from mcpgw.config import Registry
from mcpgw.core.gateway import Gateway
from mcpgw.errors import GatewayError, StartupError
from mcpgw.server import replicas, scrape
from mcpgw.server.callback import callback_route
from mcpgw.server.coalesce import Coalescing
from mcpgw.server.direct import Direct
from mcpgw.server.edge import BodyLimit
from mcpgw.server.handlers import HTTP_PERSONA, PERSONA_PATH_PARAM, build_server
from mcpgw.server.hostcheck import HostCheck, transport_security
from mcpgw.server.lifecycle import check_personas, stop_on_signals
from mcpgw.server.ratelimit import RateLimits
from mcpgw.server.reload import Reloader
from mcpgw.server.sessions import SessionLimits
from mcpgw.server.stateless import StatelessCalls

logger = logging.getLogger("mcpgw.http")

PERSONA_PATH = f"/personas/{{{PERSONA_PATH_PARAM}}}/mcp"
KEEP_ALIVE_SECONDS = 5
"""How long an idle keep-alive connection stays open between requests (uvicorn's default, kept)."""
MAX_HEADER_BYTES = 64 * 1024
"""The most a request's headers may take (a bearer JWT is a few KiB); more gets 431."""


def http_app(
    gateway: Gateway, *, host: str, reloader: Reloader | None = None, registry_path: Path | None = None
) -> Any:
    """`/mcp` for the default persona (or everything), `/personas/<name>/mcp` for each persona,
    and the admin console at `/admin` (`server.console`; `registry_path` is the file it edits)."""
    limiter = Limiter(lambda: gateway.registry.limits, cluster=gateway.cluster)
    server, _ = build_server(gateway, limiter=limiter)
    settings = gateway.registry.gateway
    security = transport_security(gateway.registry, bind=host)
    from mcpgw.server import resume

    # As `server.streamable_http_app(...)`, plus an event store (dropped SSE streams can be
    # resumed) and bounded sessions.
    sessions = resume.streamable_http_app(
        server,
        path="/mcp",
        security=security,
        max_body=settings.max_request_bytes,
        max_sessions=settings.max_sessions,
        per_client=settings.max_sessions_per_client,
        idle_timeout=settings.session_idle_timeout,
        store=replicas.event_store(gateway),
        session_prefix=replicas.session_prefix(gateway),
    )
    endpoint = next(r.endpoint for r in sessions.routes if isinstance(r, Route) and r.path == "/mcp")
    # 2026-07-28 calls answered in one JSON body are served without the SDK's per-request transport.
    lean = StatelessCalls(endpoint, server, manager=server.session_manager)
    routes = [
        Route("/mcp", endpoint=lean),
        Route(PERSONA_PATH, endpoint=PersonaEndpoint(gateway, lean)),
        Route("/healthz", endpoint=_health(gateway, reloader), methods=["GET"]),
        callback_route(gateway),  # where per-user upstream logins come back (`server.callback`)
    ]
    metrics = gateway.metrics
    if metrics is not None:
        if isinstance(endpoint, SessionLimits):
            metrics.track_sessions("http", lambda: endpoint.open)
        if gateway.registry.telemetry.metrics_port is None:  # else on a listener of its own
            routes.append(scrape.metrics_route(metrics))

    from mcpgw.server.console import Console, console_app

    admin = Mount("/admin", app=console_app(Console(gateway, registry_path, gateway.audit)))

    def shell(registry: Registry) -> Direct:
        app = Starlette(
            routes=[*(Route(r.path, endpoint=r.endpoint, methods=r.methods) for r in routes), admin]
        )
        app.add_middleware(RateLimits, limiter=limiter)  # inside the body limit: reads the body it read
        app.add_middleware(BodyLimit, limit=settings.max_request_bytes, timeout=settings.request_body_timeout)
        if registry.auth is not None or settings.cors_origins:
            from mcpgw.server import auth

            auth.install(
                app,
                registry,
                mcp_path="/mcp",
                persona_path=PERSONA_PATH,
                audit=gateway.audit,
                metrics=gateway.metrics,
            )
        # Added last, so outermost: nothing (not even the body limit) answers a rebound page; and
        # first (`field_values`) every check reads header values as HTTP defines them, whatever
        # the parser kept.
        app.add_middleware(HostCheck, settings=security, field_values=True)
        return Direct(app, paths=("/mcp", PERSONA_PATH))  # past the router, through the same layers

    return LiveApp(sessions, shell, lambda: gateway.registry)


class LiveApp:
    """The HTTP app, its auth layer rebuilt from the registry a reload brings.

    What `[auth]` puts in front of the endpoints (the token checks, each persona's audience and
    metadata) is built for one registry; when a reload changes `[auth]` or the personas, the next
    request gets a new shell around the same endpoints. The sessions live in the session manager,
    which `sessions` (its lifespan) runs once, so no client session is touched.
    """

    def __init__(
        self, sessions: Starlette, shell: Callable[[Registry], Direct], registry: Callable[[], Registry]
    ) -> None:
        self._sessions = sessions
        self._shell = shell
        self._registry = registry
        self._built_for: tuple[Any, ...] | None = None
        self._seen: Registry | None = None
        self._app: Direct | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._sessions(scope, receive, send)
            return
        registry = self._registry()
        if registry is not self._seen or self._app is None:  # a reload brings a new registry
            key = (registry.auth, list(registry.personas))
            if self._app is None or key != self._built_for:
                self._app, self._built_for = self._shell(registry), key
            self._seen = registry
        await self._app(scope, receive, send)


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
        named = HTTP_PERSONA.set(name)
        try:
            await self._endpoint(scope, receive, send)
        finally:
            HTTP_PERSONA.reset(named)


def _health(gateway: Gateway, reloader: Reloader | None) -> Callable[[Any], Awaitable[JSONResponse]]:
    async def health(request: Any) -> JSONResponse:
        """For load balancers and monitors: 200 when every upstream is ready, else 503, with each state.

        `config` says what the last registry reload did: a refused edit (file, key, reason) is shown
        there without failing the check, since the gateway keeps serving what it loaded before.
        """
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
        body: dict[str, Any] = {"status": "ok" if healthy else "degraded", "upstreams": upstreams}
        if reloader is not None:
            body["config"] = reloader.status()
        if sessions := gateway.per_user.running():  # callers' own sessions of per-user servers
            body["per_user_sessions"] = len(sessions)
        if gateway.cluster is not None:  # which replica answered, behind a load balancer
            body["replica"] = gateway.cluster.replica
        return JSONResponse(body, status_code=200 if healthy else 503)

    return health


async def serve_http(
    gateway: Gateway,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], Awaitable[None]] | None = None,
    registry_path: Path | None = None,
) -> None:
    """Serve streamable HTTP at http://host:port/mcp until a signal arrives.

    `registry_path`: the file the gateway was built from, reloaded live (see `server.reload`).
    """
    import uvicorn

    from mcpgw.server import auth

    auth.check_exposure(gateway.registry, host=host)
    reloader = Reloader(gateway, registry_path, host=host) if registry_path is not None else None
    app = http_app(gateway, host=host, reloader=reloader, registry_path=registry_path)
    settings = gateway.registry.gateway
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # its lines go through the gateway's own log (and its format)
        access_log=False,  # at "warning" it writes none, but would format each request's line first
        lifespan="on",
        http=_compat.http_protocol(
            header_timeout=settings.request_header_timeout,
            max_header_bytes=MAX_HEADER_BYTES,
            wrap_transport=Coalescing,
        ),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # No `Server: uvicorn` line in every answer's head: no client reads it, and uvicorn checks
        # and writes it per response (it also told every caller which server to probe).
        server_header=False,
    )
    web = uvicorn.Server(config)
    # uvicorn would re-raise a caught SIGTERM after serving, killing us before the upstreams are
    # stopped; our own receiver below asks it to exit instead, and cleanup then runs in order.
    _compat.uvicorn_without_signal_capture(web)
    # Bound here, before any upstream starts: a taken port is one line (`StartupError`), not
    # uvicorn's sys.exit inside our task group after the upstreams were started for nothing.
    sock = listen(host, port)
    failures: list[GatewayError] = []
    checked = anyio.Event()
    try:
        async with scrape.listening(gateway), gateway.running(), anyio.create_task_group() as tg:

            def stop() -> None:
                if reloader is not None:
                    reloader.close()
                web.should_exit = True

            async def check() -> None:
                try:
                    await check_personas(gateway)
                except GatewayError as exc:
                    # A broken persona ends the serve cleanly (uvicorn shuts down; no traceback), and
                    # the error is raised once it has: one line from the CLI, exit code 2.
                    failures.append(exc)
                    stop()
                else:
                    checked.set()

            async def announce() -> None:
                while not web.started:
                    await anyio.sleep(0.02)
                await checked.wait()
                bound = sock.getsockname()[1]
                url = f"http://{_url_host(host)}:{bound}/mcp"
                if on_ready is not None:
                    await on_ready(url)

            tg.start_soon(
                partial(stop_on_signals, reload=reloader.request if reloader else None), gateway, stop
            )
            tg.start_soon(check)
            tg.start_soon(announce)
            if reloader is not None:
                tg.start_soon(reloader.run)
            if gateway.cluster is not None:
                shared = replicas.Replicas(gateway, registry_path=registry_path, reloader=reloader)
                tg.start_soon(shared.run)
            await web.serve(sockets=[sock])
            stop()
            tg.cancel_scope.cancel()
    finally:
        sock.close()
        if gateway.cluster is not None:
            with anyio.CancelScope(shield=True):
                await gateway.cluster.close()
    if failures:
        raise failures[0]


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, or a `StartupError` saying why there is none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        # create_server appends the address to strerror; the message names it once already.
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = ": another process is listening there (pick another --port, or 0 for a free one)"
        elif exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            hint = ": pick an address of this machine (--host) and a port above 1023"
        raise StartupError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    except UnicodeError as exc:  # an address IDNA cannot encode
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
