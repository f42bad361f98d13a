"""Editing the registry: `mcpgw add-server`, `remove-server`, `enable`, `disable`, and Claude Desktop's
configuration (`install claude-desktop`, `import claude-desktop`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import click

from mcpgw import config as config_mod
from mcpgw.cli.options import config_option, edit_path, json_option, load_registry
from mcpgw.cli.output import err, out, print_findings
from mcpgw.config import edit as registry_mod
from mcpgw.config import server_config
from mcpgw.errors import ConfigError, RegistryError


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
@click.option(
    "--env", "env", multiple=True, help="Environment KEY=VALUE for a command (values may use ${VAR})."
)
@click.option("--cwd", help="Working directory for a command.")
@click.option("--namespace", help="Prefix of exposed names (default: NAME; '' for none).")
@click.option("--timeout", type=float, help="Seconds per call.")
@click.option("--no-check", is_flag=True, help="Do not connect to the server before adding it.")
@json_option
def add_server(
    config_path: Path | None,
    name: str,
    command: tuple[str, ...],
    url: str | None,
    headers: tuple[str, ...],
    sse: bool,
    env: tuple[str, ...],
    cwd: str | None,
    namespace: str | None,
    timeout: float | None,
    no_check: bool,
    as_json: bool,
) -> None:
    """Add a server: `add-server NAME -- COMMAND ARGS...` or `add-server NAME --url URL`."""
    fields: dict[str, Any] = {}
    if command and url:
        raise RegistryError("give either a command (after --) or --url, not both")
    if command:
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
        raise RegistryError("give a command (add-server NAME -- COMMAND ARGS...) or --url URL")
    if namespace is not None:
        fields["namespace"] = namespace
    if timeout is not None:
        fields["timeout"] = timeout
    try:
        server = server_config(fields, key=f"servers.{name}")
    except ConfigError as exc:  # names the key as the file would: servers.NAME.url
        raise RegistryError(str(exc)) from None
    path = edit_path(config_path)
    result: dict[str, Any] = {"added": name, "file": str(path), "tools": None, "findings": []}
    if not no_check:
        from mcpgw.security import review

        check = anyio.run(review.check_server, path, name, server)
        print_findings(check.findings)
        if check.error is not None:
            raise check.error
        err.print(f"checked {name}: {check.tools} tools")
        result.update(tools=check.tools, findings=[str(finding) for finding in check.findings])
    registry_mod.add_server(path, name, server)
    err.print(f"added [bold]{name}[/] to {path}")
    if as_json:
        out.print_json(data=result)


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


# --- Claude Desktop ------------------------------------------------------------------------------


@click.group()
def install() -> None:
    """Put mcpgw into a client's configuration."""


@install.command("claude-desktop")
@config_option
@click.option(
    "--write",
    "write_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Merge the entry into this Claude Desktop config file.",
)
@click.option("--name", default="mcpgw", show_default=True, help="Entry name in mcpServers.")
@click.option("--persona", "-p", default=None, help="The persona the entry serves.")
def install_claude_desktop(
    config_path: Path | None, write_file: Path | None, name: str, persona: str | None
) -> None:
    """Print (or merge with --write) the Claude Desktop entry that starts mcpgw."""
    path = config_path or (config_mod.default_path() if config_mod.default_path().exists() else None)
    if persona is not None:
        registry, _ = load_registry(path)
        if persona not in registry.personas:
            raise RegistryError(
                f"unknown persona {persona!r} (known: {', '.join(registry.personas) or 'none'})"
            )
    entry = registry_mod.claude_desktop_entry(
        path, name=name, extra_args=["--persona", persona] if persona else None
    )
    if write_file is None:
        out.print_json(data={"mcpServers": entry})
        return
    registry_mod.merge_into_claude_desktop(write_file, entry)
    err.print(f"wrote the {name!r} entry into {write_file}")


@click.group("import")
def import_() -> None:
    """Import servers from another client's configuration."""


@import_.command("claude-desktop")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def import_claude_desktop(config_path: Path | None, file: Path, as_json: bool) -> None:
    """Turn the mcpServers block of a Claude Desktop config FILE into registry entries."""
    path = edit_path(config_path)
    added, skipped = registry_mod.import_claude_desktop(path, file)
    for name in added:
        err.print(f"added {name}")
    for reason in skipped:
        err.print(f"skipped {reason}")
    err.print(f"{len(added)} added, {len(skipped)} skipped, in {path}")
    if as_json:
        out.print_json(
            data={"added": list(added), "skipped": [str(reason) for reason in skipped], "file": str(path)}
        )
