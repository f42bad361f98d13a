"""Logging in to OAuth-protected upstreams: `mcpgw login SERVER` and `mcpgw logout SERVER`.

A thin layer over `upstream.login`: it finds the server's URL in the registry, shows the
authorization URL (and opens the browser unless `--no-browser`), and says who is logged in.
"""

from __future__ import annotations

import time
import webbrowser
from pathlib import Path

import anyio
import click
from rich.markup import escape

from mcpgw.cli.options import config_option, json_option, load_registry
from mcpgw.cli.output import err, out
from mcpgw.config import HttpServer, Registry, SseServer
from mcpgw.errors import RegistryError


def _target(registry: Registry, name: str) -> tuple[HttpServer | SseServer, str, dict[str, str] | None]:
    from mcpgw.upstream import credentials

    server = registry.servers.get(name)
    if server is None:
        raise RegistryError(f"no server named {name!r} in the registry")
    if not isinstance(server, HttpServer | SseServer):
        raise RegistryError(f"{name!r} is a command server: only URL servers log in")
    params = server.to_params(name, environ=credentials.environ(credentials.load_secrets(registry.gateway)))
    return server, params.url, params.headers


def run_login(registry: Registry, name: str, *, browser: bool) -> dict[str, object]:
    """Log in to `name` (the URL shown, the browser opened if asked); what `login` prints."""
    from mcpgw.upstream import credentials, login

    server, url, headers = _target(registry, name)

    async def open_url(authorization_url: str) -> None:
        err.print(f"To log in to [bold]{escape(name)}[/], open:\n{escape(authorization_url)}", soft_wrap=True)
        if browser:
            await anyio.to_thread.run_sync(webbrowser.open, authorization_url)
        err.print("waiting for the browser to come back ...")

    environ = credentials.environ(credentials.load_secrets(registry.gateway))
    found = anyio.run(
        lambda: login.login(name, server, url, headers, registry.gateway, environ, open_url=open_url)
    )
    return {
        "server": found.server,
        "url": found.url,
        "issuer": found.issuer,
        "client_id": found.client_id,
        "subject": found.subject,
        "scope": found.scope,
        "expires_in": round(found.expires_at - time.time()) if found.expires_at else None,
        "refreshable": found.refreshable,
    }


def show_login(result: dict[str, object]) -> None:
    who = f" as [bold]{escape(str(result['subject']))}[/]" if result["subject"] else ""
    err.print(f"logged in to [bold]{escape(str(result['server']))}[/]{who} ({escape(str(result['url']))})")
    details = [f"issuer {result['issuer']}", f"scope {result['scope'] or '-'}"]
    if result["expires_in"] is not None:
        details.append(f"token expires in {result['expires_in']}s")
    details.append(
        "refreshed automatically"
        if result["refreshable"]
        else "no refresh token: log in again when it expires"
    )
    err.print(escape(", ".join(details)))


@click.command()
@config_option
@click.argument("name")
@click.option("--no-browser", is_flag=True, help="Only print the login URL; do not open a browser.")
@json_option
def login(config_path: Path | None, name: str, no_browser: bool, as_json: bool) -> None:
    """Log in to an OAuth-protected URL server (discovery, registration, browser, tokens stored)."""
    registry, _ = load_registry(config_path)
    result = run_login(registry, name, browser=not no_browser)
    show_login(result)
    if as_json:
        out.print_json(data=result)


@click.command()
@config_option
@click.argument("name")
def logout(config_path: Path | None, name: str) -> None:
    """Revoke and forget the tokens of `mcpgw login SERVER`."""
    from mcpgw.upstream import logout as logout_mod

    registry, _ = load_registry(config_path)
    _, url, _ = _target(registry, name)
    done = anyio.run(logout_mod.logout, name, url, registry.gateway)
    if done is not None:
        err.print(f"logged out of {escape(name)} ({done})")
    else:
        err.print(f"{escape(name)}: not logged in")
