"""Serving the gateway's Prometheus metrics: `/metrics`, on the HTTP listener or on one of its own.

Owns: the `/metrics` route (prometheus-client's exposition: the text format, OpenMetrics
when asked for, gzip when accepted) and `listener`, a listener that serves only that
route, for stdio serving or to keep the metrics off a public HTTP listener
(`listening`: the gateway's, when `[telemetry] metrics_port` asks for one). Either
way `/metrics` answers without a token, like `/healthz`: scrapers rarely hold an OAuth
token, and the metrics hold counts and names, never arguments, results or principals.
The Host check against DNS rebinding runs in front of it as on every route.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.routing import Route

from mcpgw import _compat
from mcpgw.config import Registry
from mcpgw.core.gateway import Gateway
from mcpgw.errors import ConfigError
from mcpgw.observe.metrics import Metrics
from mcpgw.server.hostcheck import HostCheck, transport_security

logger = logging.getLogger("mcpgw.metrics")

METRICS_PATH = "/metrics"
SHUTDOWN_GRACE = 2
"""Seconds an open scrape may take to finish when the gateway stops."""


class _Exposition:
    """prometheus-client's ASGI app as a Starlette endpoint (a class instance routes as ASGI)."""

    def __init__(self, metrics: Metrics) -> None:
        self._app = make_asgi_app(metrics.registry)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def metrics_route(metrics: Metrics) -> Route:
    return Route(METRICS_PATH, endpoint=_Exposition(metrics), methods=["GET"])


def metrics_app(metrics: Metrics, registry: Registry, *, host: str) -> Any:
    """An app serving `/metrics` only, behind the Host check."""
    app = Starlette(routes=[metrics_route(metrics)])
    app.add_middleware(HostCheck, settings=transport_security(registry, bind=host))
    return app


@asynccontextmanager
async def listening(gateway: Gateway) -> AsyncIterator[str | None]:
    """The gateway's metrics listener while the block runs, when `[telemetry] metrics_port` asks for one."""
    telemetry = gateway.registry.telemetry
    if gateway.metrics is None or telemetry.metrics_port is None:
        yield None
        return
    async with listener(
        gateway.metrics, gateway.registry, host=telemetry.metrics_host, port=telemetry.metrics_port
    ) as url:
        yield url


@asynccontextmanager
async def listener(metrics: Metrics, registry: Registry, *, host: str, port: int) -> AsyncIterator[str]:
    """Serve `/metrics` at http://host:port while the block runs; it gets the URL (the bound port)."""
    import uvicorn

    config = uvicorn.Config(
        metrics_app(metrics, registry, host=host),
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # its lines go through the gateway's own log (and its format)
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    web = uvicorn.Server(config)
    _compat.uvicorn_without_signal_capture(web)  # the gateway's own signal handling ends the block
    # Bound here, not by uvicorn: it would log a taken port and exit the whole process.
    sock = _bind(host, port)
    try:
        ended = anyio.Event()

        async def serve() -> None:
            try:
                await web.serve([sock])
            finally:
                ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                while not web.started:
                    if ended.is_set():
                        raise ConfigError(f"the metrics listener on {host}:{port} did not start")
                    await anyio.sleep(0.02)
                bound = sock.getsockname()[1]
                url = f"http://{f'[{host}]' if ':' in host else host}:{bound}{METRICS_PATH}"
                logger.info("metrics at %s", url)
                yield url
            finally:
                web.should_exit = True  # a graceful stop: the socket is closed before the block ends
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} for metrics: {exc.strerror or exc}", key="telemetry.metrics_port"
        ) from exc
