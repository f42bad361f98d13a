"""`mcpgw admin`: the console beside a gateway that serves over stdio (which has no HTTP port).

Owns: serving the console on its own HTTP listener for a registry file, with what it needs to
show and act: its own look at the upstreams (a gateway built from the same registry and
following its edits, serving no client), the same audit database (read; each action is a row),
and the same lock file. Actions edit the registry and the lock file, which the stdio gateway's
live reload applies. It listens on loopback unless `[auth]` is configured: the console is never
reachable from another host without a token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from mcpgw import _compat
from mcpgw.audit import AuditLog, store_for
from mcpgw.audit.redact import Redactor
from mcpgw.config import Registry
from mcpgw.errors import ConfigError
from mcpgw.server.console.access import PREFIX
from mcpgw.server.console.app import console_app
from mcpgw.server.console.context import Console
from mcpgw.server.edge import BodyLimit
from mcpgw.server.hostcheck import HostCheck, is_loopback, transport_security
from mcpgw.server.http import KEEP_ALIVE_SECONDS, MAX_HEADER_BYTES, listen
from mcpgw.server.lifecycle import stop_on_signals
from mcpgw.server.reload import Reloader


def check(registry: Registry, *, host: str) -> None:
    """Refuse to serve a console that is off, or one others could reach without a token."""
    if not registry.admin.enabled:
        raise ConfigError("the console is off ([admin] enabled = false)", key="admin.enabled")
    if registry.auth is None and not is_loopback(host):
        raise ConfigError(
            f"the console would listen on {host} without [auth]: listen on 127.0.0.1, or configure [auth]",
            key="auth",
        )
    if registry.auth is None and registry.gateway.mode == "production":
        raise ConfigError("production mode: the console needs [auth]", key="gateway.mode")


def action_log(registry: Registry) -> AuditLog | None:
    """The audit log the gateway writes (its SQLite file or PostgreSQL), opened for the console's action
    rows."""
    if not registry.audit.enabled:
        return None
    settings = registry.audit
    log = AuditLog(
        store_for(settings),
        redactor=Redactor(extra_keys=settings.redact_keys, extra_patterns=settings.redact_patterns),
        instance=settings.instance or "mcpgw admin",
    )
    return log.start()


async def serve_console(
    registry: Registry,
    registry_path: Path,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Serve the console at http://host:port/admin until a signal arrives."""
    import uvicorn

    from mcpgw.assembly import build_gateway

    check(registry, host=host)
    actions = action_log(registry)
    gateway = build_gateway(registry, registry_path=registry_path, audit=None).gateway
    console = Console(gateway, registry_path, actions, live=False)

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/servers", status_code=303)

    app = Starlette(routes=[Route("/", home), Mount(PREFIX, app=console_app(console))])
    settings = registry.gateway
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, timeout=settings.request_body_timeout)
    app.add_middleware(HostCheck, settings=transport_security(registry, bind=host), field_values=True)
    web = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            log_config=None,
            lifespan="off",
            http=_compat.http_protocol(
                header_timeout=settings.request_header_timeout, max_header_bytes=MAX_HEADER_BYTES
            ),
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
    )
    _compat.uvicorn_without_signal_capture(web)
    sock = listen(host, port)
    reloader = Reloader(gateway, registry_path, host=host)
    try:
        async with gateway.running(), anyio.create_task_group() as tg:

            def stop() -> None:
                reloader.close()
                web.should_exit = True

            async def announce() -> None:
                while not web.started:
                    await anyio.sleep(0.02)
                if on_ready is not None:
                    bound = sock.getsockname()[1]
                    await on_ready(
                        f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}{PREFIX}/"
                    )

            tg.start_soon(lambda: stop_on_signals(gateway, stop, reload=reloader.request))
            tg.start_soon(announce)
            tg.start_soon(reloader.run)
            await web.serve(sockets=[sock])
            stop()
            tg.cancel_scope.cancel()
    finally:
        sock.close()
        console.close()
        if actions is not None:
            actions.close()
