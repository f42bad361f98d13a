"""Editing the registry: `mcpgw add-server`, `remove-server`, `enable`, `disable`.

`add-server` refuses a taken name or namespace before it connects, then (unless `--no-check`)
starts the server once, showing its progress and, when it fails, the end of its stderr; a URL
server that wants an OAuth login is added and the login offered (`--login`, or asked in a terminal).
`--openapi` adds a REST API from its OpenAPI spec (the check reads the spec and lists its tools)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

import anyio
import click

from mcpgw import config as config_mod
from mcpgw.cli import progress
from mcpgw.cli.options import config_option, edit_path, json_option
from mcpgw.cli.output import err, out, print_findings, quiet_logs
from mcpgw.config import Era, server_config
from mcpgw.config import edit as registry_mod
from mcpgw.errors import ConfigError, RegistryError
from mcpgw.observe.logs import counted


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise RegistryError(f"{what} {value!r} must look like KEY=VALUE")
        result[key] = val
    return result


@click.command("add-server", context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--url", help="Streamable HTTP (or with --sse, legacy SSE) endpoint.")
@click.option("--header", "headers", multiple=True, help="HTTP header KEY=VALUE (values may use ${VAR}).")
@click.option("--sse", is_flag=True, help="The URL is a legacy SSE endpoint.")
@click.option("--openapi", help="A REST API's OpenAPI 3 spec (URL or file): its operations become tools.")
@click.option("--base-url", help="With --openapi: where the API is (default: the spec's servers URL).")
@click.option(
    "--include",
    multiple=True,
    help="With --openapi: operations to serve, e.g. 'GET /invoices*' (default: all).",
)
@click.option("--exclude", multiple=True, help="With --openapi: operations to leave out, in the same forms.")
@click.option(
    "--env", "env", multiple=True, help="Environment KEY=VALUE for a command (values may use ${VAR})."
)
@click.option("--cwd", help="Working directory for a command.")
@click.option("--namespace", help="Prefix of exposed names (default: NAME; '' for none).")
@click.option("--timeout", type=float, help="Seconds per call.")
@click.option(
    "--era",
    type=click.Choice(get_args(Era)),
    default=None,
    help="Protocol era: auto (probe), handshake (initialize), stateless (2026-07-28).",
)
@click.option("--no-check", is_flag=True, help="Do not connect to the server before adding it.")
@click.option(
    "--login/--no-login",
    "log_in",
    default=None,
    help="When the server wants an OAuth login, log in now (default: ask, when run in a terminal).",
)
@json_option
def add_server(
    config_path: Path | None,
    name: str,
    command: tuple[str, ...],
    url: str | None,
    headers: tuple[str, ...],
    sse: bool,
    openapi: str | None,
    base_url: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    env: tuple[str, ...],
    cwd: str | None,
    namespace: str | None,
    timeout: float | None,
    era: str | None,
    no_check: bool,
    log_in: bool | None,
    as_json: bool,
) -> None:
    """Add a server: `add-server NAME -- COMMAND ARGS...`, `--url URL` or `--openapi SPEC`."""
    fields: dict[str, Any] = {}
    if sum(map(bool, (command, url, openapi))) > 1:
        raise RegistryError("give one of a command (after --), --url or --openapi")
    if (base_url or include or exclude) and not openapi:
        raise RegistryError("--base-url, --include and --exclude go with --openapi")
    if openapi:
        fields.update(_openapi_fields(openapi, base_url, include, exclude))
        if headers:
            fields["headers"] = _pairs(headers, "--header")
    elif command:
        fields.update(command=command[0], args=list(command[1:]))
        if env:
            fields["env"] = _pairs(env, "--env")
        if cwd:
            fields["cwd"] = cwd
    elif url:
        fields["url"] = url
        if headers:
            fields["headers"] = _pairs(headers, "--header")
        if sse:
            fields["transport"] = "sse"
    else:
        raise RegistryError(
            "give a command (add-server NAME -- COMMAND ARGS...), --url URL or --openapi URL_OR_FILE"
        )
    if namespace is not None:
        fields["namespace"] = namespace
    if timeout is not None:
        fields["timeout"] = timeout
    if era is not None:
        fields["era"] = era
    try:
        server = server_config(fields, key=f"servers.{name}")
    except ConfigError as exc:  # names the key as the file would: servers.NAME.url
        raise RegistryError(str(exc)) from None
    path = edit_path(config_path)
    given = namespace is not None
    registry_mod.check_new_server(path, name, server, namespace_given=given)  # before connecting
    result: dict[str, Any] = {"added": name, "file": str(path), "tools": None, "findings": []}
    added = False
    if not no_check:
        from mcpgw.security import review

        quiet_logs()
        with progress.starting([name]):
            check = anyio.run(lambda: review.check_server(path, name, server, follow=progress.follow))
        if check.needs_login:
            # Added before the login, which finds the server (and its `login` table) in the file.
            registry_mod.add_server(path, name, server, namespace_given=given)
            added = True
            if not _offer_login(name, log_in):
                err.print(f"added [bold]{name}[/] to {path}; it needs a login: run `mcpgw login {name}`")
                if as_json:
                    out.print_json(data={**result, "needs_login": True})
                return
            from mcpgw.cli.login import run_login, show_login

            show_login(run_login(config_mod.load(path)[0], name, browser=True))
            with progress.starting([name]):
                check = anyio.run(lambda: review.check_server(path, name, server, follow=progress.follow))
        print_findings(check.findings)
        if check.error is not None:
            raise check.error
        err.print(f"checked {name}: {counted(check.tools, 'tool')}")
        result.update(tools=check.tools, findings=[str(finding) for finding in check.findings])
    if not added:
        registry_mod.add_server(path, name, server, namespace_given=given)
    err.print(f"added [bold]{name}[/] to {path}")
    if as_json:
        out.print_json(data=result)


def _openapi_fields(
    spec: str, base_url: str | None, include: tuple[str, ...], exclude: tuple[str, ...]
) -> dict[str, Any]:
    """An OpenAPI entry's keys; a spec file is written as an absolute path (the registry may be elsewhere)."""
    local = "://" not in spec and not spec.startswith("${")
    fields: dict[str, Any] = {"openapi": str(Path(spec).expanduser().resolve()) if local else spec}
    if base_url:
        fields["base_url"] = base_url
    if include:
        fields["include"] = list(include)
    if exclude:
        fields["exclude"] = list(exclude)
    return fields


def _offer_login(name: str, log_in: bool | None) -> bool:
    """Whether to log in now: `--login`/`--no-login`, else the user's answer in a terminal."""
    if log_in is not None:
        return log_in
    if not sys.stdin.isatty():
        return False
    return click.confirm(f"{name} wants an OAuth login. Log in now?", default=True, err=True)


@click.command("remove-server")
@config_option
@click.argument("name")
def remove_server(config_path: Path | None, name: str) -> None:
    """Remove a server from the registry."""
    path = edit_path(config_path)
    registry_mod.remove_server(path, name)
    err.print(f"removed {name} from {path}")


@click.command()
@config_option
@click.argument("name")
def enable(config_path: Path | None, name: str) -> None:
    """Enable a server."""
    registry_mod.set_enabled(edit_path(config_path), name, True)
    err.print(f"enabled {name}")


@click.command()
@config_option
@click.argument("name")
def disable(config_path: Path | None, name: str) -> None:
    """Disable a server (kept in the file, not started)."""
    registry_mod.set_enabled(edit_path(config_path), name, False)
    err.print(f"disabled {name}")
