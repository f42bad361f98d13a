"""`mcpgw install CLIENT` and `mcpgw import CLIENT`: mcpgw in a client's config, and its servers out.

One subcommand per client of `config.clients.CLIENTS` (claude-desktop, claude-code, cursor,
vscode, windsurf). Both edit the client's file in place (`--write`; a backup beside it, its
mode kept) and offer to remove the servers mcpgw now serves from it, so the client does not
start each twice: by a prompt on a terminal, or `--remove-imported` / `--keep-imported`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from mcpgw import config as config_mod
from mcpgw.cli.options import config_option, edit_path, load_registry
from mcpgw.cli.output import err, out
from mcpgw.config import Registry, StdioServer, clients, expand, importing, jsonc
from mcpgw.config import edit as registry_mod
from mcpgw.config.clients import Client
from mcpgw.config.files import write_atomically
from mcpgw.errors import RegistryError

SECRETS_NAME = "secrets.env"


def _removal_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--remove-imported/--keep-imported",
        "remove",
        default=None,
        help="Remove (or keep) the servers mcpgw now serves from the client's file "
        "(default: ask on a terminal, else keep).",
    )(func)


def _project_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--project", is_flag=True, help="The client's project file in the current directory, not the user's."
    )(func)


def _should_remove(remove: bool | None, names: list[str], file: Path) -> bool:
    if remove is not None or not names:
        return bool(remove) and bool(names)
    if sys.stdin.isatty() and sys.stderr.isatty():
        return click.confirm(
            f"Remove {', '.join(names)} from {file}? mcpgw serves them now (a backup is kept)",
            default=True,
            err=True,
        )
    err.print(
        f"kept {', '.join(names)} in {file}: with mcpgw there too the client would start each twice; "
        "pass --remove-imported to remove them"
    )
    return False


def _same_server(name: str, entry: Any, registry: Registry) -> bool:
    """Whether a client entry is a server the registry has (by name and target, or by command line)."""
    if not isinstance(entry, Mapping):
        return False
    target = entry.get("url") or entry.get("serverUrl")
    line = [entry.get("command"), *(entry.get("args") or [])]
    for other_name, server in registry.servers.items():
        ours = [server.command, *server.args] if isinstance(server, StdioServer) else None
        if ours is not None and ours == line:
            return True
        if importing.safe_name(name) == other_name:
            if ours is not None and ours[0] == line[0]:
                return True
            if ours is None and _without_query(getattr(server, "url", None)) == _without_query(target):
                return True  # the query may differ: an import moved a key in it to the secrets file
    return False


def _without_query(url: Any) -> str | None:
    return str(url).split("?")[0] if url else None


def _is_mcpgw(entry: Any) -> bool:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("command"), str):
        return False
    args = entry.get("args")
    return registry_mod.is_mcpgw_command(
        entry["command"], [str(a) for a in args or []] if isinstance(args, list) else []
    )


def _remove(client: Client, file: Path, editor: jsonc.Editor, names: list[str]) -> None:
    for name in names:
        editor.remove(client.servers_path(file), name)


def _written(file: Path, backup: Path | None) -> str:
    return f"{file} (backup: {backup})" if backup else f"{file} (new file)"


# --- install ------------------------------------------------------------------------------------


@click.group()
def install() -> None:
    """Put mcpgw into a client's configuration (printed, or written with --write)."""


def _install_command(client: Client) -> click.Command:
    @config_option
    @click.option(
        "--write",
        "write_file",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[FILE]",
        help=f"Edit the {client.title} file in place (default: its usual file; see --project).",
    )
    @_project_option
    @click.option("--name", default="mcpgw", show_default=True, help="The entry's name.")
    @click.option("--persona", "-p", default=None, help="The persona the entry serves.")
    @_removal_option
    def command(
        config_path: Path | None,
        write_file: str | None,
        project: bool,
        name: str,
        persona: str | None,
        remove: bool | None,
    ) -> None:
        path = config_path or (config_mod.default_path() if config_mod.default_path().exists() else None)
        registry, _ = load_registry(path)
        if persona is not None and persona not in registry.personas:
            known = ", ".join(registry.personas) or "none"
            raise RegistryError(f"unknown persona {persona!r} (known: {known})")
        exe, args = registry_mod.mcpgw_command(path, extra_args=["--persona", persona] if persona else None)
        entry = clients.entry(client, exe, args)
        if write_file is None:
            out.print_json(data={client.key: {name: entry}})
            return
        file = Path(write_file) if write_file else clients.default_file(client, project=project)
        editor = clients.read(client, file, must_exist=False)
        block = clients.servers(client, file, editor)
        if name in block and not _is_mcpgw(block[name]):
            raise RegistryError(f"{file}: already has a server named {name!r} that is not mcpgw; pass --name")
        doubles = [
            n for n, e in block.items() if n != name and not _is_mcpgw(e) and _same_server(n, e, registry)
        ]
        try:
            editor.set(client.servers_path(file), name, entry)
        except ValueError as exc:  # `"mcp": "text"` in a settings.json: not ours to replace
            raise RegistryError(f"{file}: {exc}; not touching it") from None
        if _should_remove(remove, doubles, file):
            _remove(client, file, editor, doubles)
            err.print(f"removed {', '.join(doubles)} (mcpgw serves them)")
        backup = clients.write(file, editor)
        err.print(f"wrote the {name!r} entry into {_written(file, backup)}")
        err.print(f"restart {client.title} to pick it up")

    command.__doc__ = f"{client.title}: print the entry that starts mcpgw, or put it into its file (--write)."
    return click.command(client.name)(command)


# --- import -------------------------------------------------------------------------------------


@click.group("import")
def import_() -> None:
    """Add a client's servers to the registry (secrets moved to the secrets file)."""


def _secrets_path(registry: Registry, path: Path) -> tuple[Path, str | None]:
    """The secrets file, and the value to set `[gateway] secrets_file` to when it has none."""
    if registry.gateway.secrets_file is not None:
        raw = expand(registry.gateway.secrets_file, key="gateway.secrets_file")
        return Path(raw).expanduser(), None
    file = path.resolve().parent / SECRETS_NAME
    return file, str(file)


def _import_command(client: Client) -> click.Command:
    @config_option
    @click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @_project_option
    @_removal_option
    @click.option("--json", "as_json", is_flag=True, help="Print what was imported as JSON.")
    def command(
        config_path: Path | None, file: Path | None, project: bool, remove: bool | None, as_json: bool
    ) -> None:
        file = file or clients.default_file(client, project=project)
        editor = clients.read(client, file)
        block = clients.servers(client, file, editor)
        path = edit_path(config_path)
        registry = config_mod.load(path)[0] if path.exists() else Registry()
        secrets_path, set_secrets_file = _secrets_path(registry, path)
        secrets = importing.Secrets(known=importing.read_secrets(secrets_path))
        where = f"{file}: {'.'.join(client.servers_path(file))}"
        items = importing.convert(block, where=where, taken=registry.servers, secrets=secrets)
        added: dict[str, importing.Imported] = {}
        skipped: list[tuple[str, str]] = []
        removable: list[str] = []
        for item in items:
            if registry_mod.is_mcpgw_entry(item.server):
                skipped.append((item.source, "that is mcpgw itself"))
            elif item.name in registry.servers:
                skipped.append((item.source, "already in the registry"))
                if _same_server(item.source, block[item.source], registry):
                    removable.append(item.source)
            else:
                added[item.name] = item
                removable.append(item.source)
        if added:
            secrets_file = set_secrets_file if secrets.added else None
            text = registry_mod.import_servers(
                path, {n: i.server for n, i in added.items()}, secrets_file=secrets_file
            )
            importing.store_secrets(secrets_path, secrets.added)  # before the registry that names them
            write_atomically(path, text)
        for item in added.values():
            err.print(f"added [bold]{escape(item.name)}[/]")
            for notice in item.notices:
                err.print(f"  {escape(notice)}")
        for source, reason in skipped:
            err.print(f"skipped {escape(source)} ({reason})")
        if secrets.added:
            names = ", ".join(secrets.added)
            err.print(f"stored {len(secrets.added)} secrets in {secrets_path} (mode 0600): {names}")
            if set_secrets_file:
                err.print(f"set \\[gateway] secrets_file = {set_secrets_file!r} in {path}")
        err.print(f"{len(added)} added, {len(skipped)} skipped, in {path}")
        removed: list[str] = []
        if _should_remove(remove, removable, file):
            _remove(client, file, editor, removable)
            backup = clients.write(file, editor)
            removed = removable
            err.print(f"removed {', '.join(removable)} from {_written(file, backup)}")
            err.print(f"add mcpgw to it with `mcpgw install {client.name} --write`")
        if as_json:
            out.print_json(
                data={
                    "added": [
                        {"name": i.name, "from": i.source, "notices": i.notices} for i in added.values()
                    ],
                    "skipped": [{"from": s, "reason": r} for s, r in skipped],
                    "secrets": sorted(secrets.added),
                    "removed_from_client": removed,
                    "file": str(path),
                    "client_file": str(file),
                }
            )

    command.__doc__ = (
        f"{client.title}: add the servers of its config FILE (default: its usual file) to the registry."
    )
    return click.command(client.name)(command)


for _client in clients.CLIENTS.values():
    install.add_command(_install_command(_client))
    import_.add_command(_import_command(_client))
