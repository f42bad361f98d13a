"""Edits of the registry file that keep its comments and order.

Owns: adding, removing, enabling and disabling servers with tomlkit, adding the
servers imported from a client (`config.importing`), the command a client's
entry runs to start mcpgw. Files are replaced through `config.files.write_atomically`.
Every edit is validated as a whole document before it is written, and written
atomically, so a refused edit leaves the file exactly as it was.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import tomlkit
from tomlkit.items import Table

from mcpgw.config.files import write_atomically
from mcpgw.config.registry import Registry, validate
from mcpgw.config.servers import ServerConfig, StdioServer, namespace_of
from mcpgw.errors import ConfigError, RegistryError

NEW_FILE_HEADER = """\
# mcpgw registry: one [servers.NAME] table per upstream MCP server.
# Edit by hand or with `mcpgw add-server` / `remove-server` / `enable` / `disable`.
# Values may reference environment variables: headers = { Authorization = "Bearer ${TOKEN}" }
"""


def _read(path: Path) -> tomlkit.TOMLDocument:
    if not path.exists():
        return tomlkit.parse(NEW_FILE_HEADER)
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from exc


def _write(path: Path, doc: tomlkit.TOMLDocument) -> Registry:
    """Validate the whole edited document, then replace the file atomically."""
    registry = validate(doc.unwrap(), source=str(path))
    write_atomically(path, tomlkit.dumps(doc))
    return registry


def _servers(doc: tomlkit.TOMLDocument) -> Table:
    if "servers" not in doc:
        doc.add("servers", tomlkit.table(is_super_table=True))
    servers = doc["servers"]
    assert isinstance(servers, Table)
    return servers


def server_table(server: ServerConfig) -> Table:
    """The TOML table for one server, with only the keys that differ from defaults."""
    table = tomlkit.table()
    for key, value in server.entry().items():
        table.add(key, value)
    return table


def check_new_server(path: Path, name: str, server: ServerConfig, *, namespace_given: bool = False) -> None:
    """Refuse a taken name or namespace (before `add-server` spends time connecting)."""
    doc = _read(path)
    if name in _servers(doc):
        raise RegistryError(f"a server named {name!r} already exists in {path}; pick another name")
    existing = validate(doc.unwrap(), source=str(path))
    wanted = namespace_of(name, server)
    for other_name, other in existing.servers.items():
        if wanted and namespace_of(other_name, other) == wanted:
            fix = "pick another --namespace" if namespace_given else "pick another name or pass --namespace"
            raise RegistryError(f"namespace {wanted!r} is already used by server {other_name!r}; {fix}")


def add_server(path: Path, name: str, server: ServerConfig, *, namespace_given: bool = False) -> Registry:
    check_new_server(path, name, server, namespace_given=namespace_given)
    doc = _read(path)
    _servers(doc).add(name, server_table(server))
    return _write(path, doc)


def remove_server(path: Path, name: str) -> Registry:
    doc = _read(path)
    servers = _servers(doc)
    if name not in servers:
        raise RegistryError(f"no server named {name!r} in {path}")
    del servers[name]
    return _write(path, doc)


def set_enabled(path: Path, name: str, enabled: bool) -> Registry:
    doc = _read(path)
    servers = _servers(doc)
    if name not in servers:
        raise RegistryError(f"no server named {name!r} in {path}")
    table = servers[name]
    assert isinstance(table, Table)
    if enabled and "enabled" in table:
        del table["enabled"]
    elif not enabled:
        table["enabled"] = False
    return _write(path, doc)


# --- imports -----------------------------------------------------------------------------------


def import_servers(
    path: Path, servers: Mapping[str, ServerConfig], *, secrets_file: str | None = None
) -> str:
    """The registry text with `servers` added (and `[gateway] secrets_file` set when given),
    validated as a whole; the caller writes it (`write_atomically`) once the secrets are stored."""
    doc = _read(path)
    table = _servers(doc)
    for name, server in servers.items():
        if name in table:
            raise RegistryError(f"a server named {name!r} already exists in {path}")
        table.add(name, server_table(server))
    if secrets_file is not None:
        if "gateway" not in doc:
            doc.add("gateway", tomlkit.table())
        gateway = doc["gateway"]
        assert isinstance(gateway, Table)
        gateway["secrets_file"] = secrets_file
    validate(doc.unwrap(), source=str(path))
    return tomlkit.dumps(doc)


def is_mcpgw_entry(server: ServerConfig) -> bool:
    """Whether a client's entry starts mcpgw itself (never imported, never removed)."""
    return isinstance(server, StdioServer) and is_mcpgw_command(server.command, server.args)


def is_mcpgw_command(command: str, args: list[str]) -> bool:
    return Path(command).name in ("mcpgw", "mcpgw.exe") or args[:2] == ["-m", "mcpgw"]


def mcpgw_command(config: Path | None, *, extra_args: list[str] | None = None) -> tuple[str, list[str]]:
    """The command and arguments that start this mcpgw over stdio (for a client's entry)."""
    args = ["serve", "--transport", "stdio"]
    if config is not None:
        args += ["--config", str(config.resolve())]
    args += extra_args or []
    for exe in (Path(sys.executable).parent / "mcpgw", Path(sys.executable).parent / "mcpgw.exe"):
        if exe.exists():
            return str(exe), args
    return sys.executable, ["-m", "mcpgw", *args]


# --- personas ----------------------------------------------------------------------------------


def persona_edit(path: Path, name: str, keys: Mapping[str, object]) -> tuple[str, str, Registry]:
    """The registry text before and after setting `keys` of `[personas.NAME]`, the result validated.

    Keys of the persona not in `keys` (`deny`, `tools` overrides, `catalog`, comments) stay as they
    are; `resources` and `prompts` get their `allow` set and keep their `deny`; a false `read_only`
    is removed rather than written. Nothing is written: the caller shows the diff, then writes the
    new text with `write_atomically`.
    """
    doc = _read(path)
    before = tomlkit.dumps(doc)
    if "personas" not in doc:
        doc.add("personas", tomlkit.table(is_super_table=True))
    personas = doc["personas"]
    assert isinstance(personas, Table)
    if name not in personas:
        personas.add(name, tomlkit.table())
    table = personas[name]
    if not isinstance(table, Table):
        raise RegistryError(f"[personas.{name}] in {path} is not a table; edit it by hand")
    for key, value in keys.items():
        if key in ("resources", "prompts") and isinstance(value, Mapping):
            if key not in table:
                table.add(key, tomlkit.table())
            section = table[key]
            if not isinstance(section, Table):
                raise RegistryError(f"[personas.{name}.{key}] in {path} is not a table; edit it by hand")
            for sub, subvalue in value.items():
                section[sub] = _array(subvalue)
        elif key == "read_only" and value is False:
            if key in table:
                del table[key]
        else:
            table[key] = _array(value)
    registry = validate(doc.unwrap(), source=str(path))
    return before, tomlkit.dumps(doc), registry


def _array(value: object) -> object:
    """A list of more than two names as a TOML array of one name per line (diffs read line by line)."""
    if not isinstance(value, list) or len(value) <= 2:
        return value
    array = tomlkit.array()
    array.extend(value)
    return array.multiline(True)


def persona_section(text: str, name: str) -> str:
    """The `[personas.NAME]` table of a registry text, with its comments, as TOML on its own."""
    personas = tomlkit.parse(text)["personas"]
    assert isinstance(personas, Table)
    section = tomlkit.table(is_super_table=True)
    section.add(name, personas[name])
    doc = tomlkit.document()
    doc.add("personas", section)
    return tomlkit.dumps(doc)
