"""`mcpgw serve`: the gateway over stdio or streamable HTTP."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click

from mcpgw.cli.options import config_option, load_registry
from mcpgw.errors import ConfigError, RegistryError
from mcpgw.observe.logs import LogFormat, counted

if TYPE_CHECKING:
    from mcpgw.config import Registry
    from mcpgw.observe.otel import Started


@click.command()
@config_option
@click.option("--transport", "-t", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default=None, help="HTTP address (default: [gateway].host, 127.0.0.1).")
@click.option(
    "--port", type=int, default=None, help="HTTP port (default: [gateway].port, 8765; 0 picks one)."
)
@click.option("--persona", "-p", default=None, help="stdio: serve this persona (HTTP: /personas/NAME/mcp).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="The gateway's log on stderr: text, or one JSON object per line (default: [telemetry].log_format).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics at http://[telemetry].metrics_host:PORT/metrics "
    "(stdio: the only way to get them; HTTP: instead of /metrics on the main port; 0 picks one).",
)
def serve(
    config_path: Path | None,
    transport: str,
    host: str | None,
    port: int | None,
    persona: str | None,
    log_level: str,
    log_format: str | None,
    metrics_port: int | None,
) -> None:
    """Serve the merged catalog over stdio (for Claude Desktop, IDEs) or streamable HTTP."""
    # Only the chosen transport is imported: HTTP's stack (Starlette, the OAuth guard) is not on stdio's path.
    from mcpgw.server.lifecycle import stderr_logging

    level = getattr(logging, log_level.upper())
    chosen: LogFormat = "json" if log_format == "json" else "text"
    stderr_logging(level, fmt=chosen)
    registry, path = load_registry(config_path)
    telemetry = registry.telemetry
    fmt: LogFormat = chosen if log_format is not None else telemetry.log_format
    if fmt != chosen:  # the registry asks for another format than the flag's default
        stderr_logging(level, fmt=fmt)
    if metrics_port is not None:
        registry = registry.model_copy(
            update={"telemetry": telemetry.model_copy(update={"metrics_port": metrics_port, "metrics": True})}
        )
    # Counted only where they are served: over HTTP, or on a listener of their own.
    served = registry.telemetry.metrics and (
        transport == "http" or registry.telemetry.metrics_port is not None
    )
    source = str(path) if path else "the shipped default registry"
    http_port = registry.gateway.port if port is None else port
    if transport == "http" and http_port and registry.telemetry.metrics_port == http_port:
        raise ConfigError(
            f"{http_port} is the HTTP port too: give the metrics another port, or leave "
            "metrics_port unset to serve /metrics on the HTTP port",
            key="telemetry.metrics_port",
        )
    if persona is not None and transport == "http":
        raise RegistryError(
            "--persona applies to stdio; over HTTP each persona has its own /personas/NAME/mcp"
        )
    if transport == "http" and registry.gateway.mode == "production":
        from mcpgw.server import auth

        # Refuse an unsafe exposure before anything else is loaded or logged.
        auth.check_exposure(registry, host=host or registry.gateway.host)
    from mcpgw.assembly import build_gateway
    from mcpgw.catalog.personas import resolve

    resolve(registry, persona)
    traced = _traces(registry)
    built = build_gateway(registry, registry_path=path, metrics=served)
    gateway, audit_log = built.gateway, built.audit

    async def ready(url: str) -> None:
        await gateway.wait_started()
        if fmt == "json":  # stderr holds JSON lines only: the banner is one of them
            ready_count = sum(u.state == "ready" for u in gateway.upstreams.values())
            logging.getLogger("mcpgw").info(
                "serving %s at %s: %d of %d servers ready, %s; personas: %s; auth: %s",
                source,
                url,
                ready_count,
                len(gateway.upstreams),
                counted(len(gateway.catalog.tools), "tool"),
                ", ".join(registry.personas) or "none",
                registry.auth.issuer if registry.auth is not None else "none",
            )
            return
        from mcpgw.cli.output import err, print_servers, print_tools  # rich: only for this banner

        err.print(f"[bold green]mcpgw[/] serving {source} at [bold]{url}[/]")
        for name in registry.personas:
            err.print(f"  persona [bold]{name}[/]: {url.removesuffix('/mcp')}/personas/{name}/mcp")
        if registry.auth is not None:
            metadata = f"{registry.auth.public_url.rstrip('/')}/.well-known/oauth-protected-resource/mcp"
            err.print(f"auth: bearer tokens from {registry.auth.issuer} (metadata: {metadata})")
        else:
            err.print("auth: none (no \\[auth] section: any client that reaches the port may call)")
        print_servers(gateway, err)
        print_tools(gateway, err)
        if served and registry.telemetry.metrics_port is None:
            err.print(f"metrics: {url.removesuffix('/mcp')}/metrics")
        if registry.admin.enabled and (registry.auth is not None or registry.gateway.mode != "production"):
            err.print(f"console: {url.removesuffix('/mcp')}/admin/")
        if audit_log is not None:
            err.print(f"audit log: {audit_log.path} (see `mcpgw logs`)")
        err.print("Press Ctrl+C to stop.")

    try:
        if transport == "stdio":
            from mcpgw.server.stdio import serve_stdio

            logging.getLogger("mcpgw").info("serving %s over stdio", source)
            anyio.run(
                lambda: serve_stdio(gateway, persona, registry_path=path), backend_options=_loop_options()
            )
        else:
            from mcpgw.server.http import serve_http

            anyio.run(
                lambda: serve_http(
                    gateway,
                    host=host or registry.gateway.host,
                    port=http_port,
                    on_ready=ready,
                    registry_path=path,
                ),
                backend_options=_loop_options(),
            )
    finally:
        if audit_log is not None:
            audit_log.close()
        if traced is not None:
            from mcpgw.observe import tracing

            tracing.stop(traced)
        # What is left is the interpreter's teardown, whose garbage collections over everything
        # imported took about a second: a stdio client allows 2 s from closing stdin to SIGTERM.
        # Frozen objects are skipped by them; atexit handlers and stream flushing still run.
        gc.freeze()


def _traces(registry: Registry) -> Started | None:
    """Tracing on, if `[telemetry]` or the `OTEL_*` variables ask for it (see `observe.otel`)."""
    from mcpgw.observe import tracing

    telemetry = registry.telemetry
    traced = tracing.start(
        traces=telemetry.traces, endpoint=telemetry.traces_endpoint, service_name=telemetry.service_name
    )
    if traced is not None:
        logging.getLogger("mcpgw").info("tracing: spans go to %s over OTLP/HTTP", traced.endpoint)
    return traced


def _loop_options() -> dict[str, Any]:
    """uvloop where it is installed: the serving loop's per-message overhead is most of a call's cost."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
