"""`mcpgw admin`: the web console for a registry whose gateway serves over stdio."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import click

from mcpgw.cli.options import config_option, load_registry
from mcpgw.cli.output import err
from mcpgw.errors import ConfigError


@click.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8766, show_default=True, help="Port (0 picks a free one).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
def admin(config_path: Path | None, host: str, port: int, log_level: str) -> None:
    """Serve the web console (servers, personas, traffic, spend, pins) for a registry served over stdio."""
    from mcpgw.server.console.standalone import check, serve_console
    from mcpgw.server.lifecycle import stderr_logging

    stderr_logging(getattr(logging, log_level.upper()))
    registry, path = load_registry(config_path)
    if path is None:
        raise ConfigError("mcpgw admin needs a registry file to show and edit (--config, or ./servers.toml)")

    check(registry, host=host)  # before anything starts

    async def ready(url: str) -> None:
        err.print(f"[bold green]mcpgw admin[/] for {path} at [bold]{url}[/]  (Ctrl+C to stop)")

    anyio.run(lambda: serve_console(registry, path, host=host, port=port, on_ready=ready))
