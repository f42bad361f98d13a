"""Edits of the registry file that keep its comments and order.

Owns: adding, removing, enabling and disabling servers with tomlkit, importing
a Claude Desktop `mcpServers` block, and the Claude Desktop entry that starts
mcpgw. Every edit is validated as a whole document before it is written, and
written atomically, so a refused edit leaves the file exactly as it was.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from mcpgw.config.registry import Registry, server_config, validate
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


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def add_server(path: Path, name: str, server: ServerConfig) -> Registry:
    doc = _read(path)
    servers = _servers(doc)
    if name in servers:
        raise RegistryError(f"a server named {name!r} already exists in {path}; pick another name")
    existing = validate(doc.unwrap(), source=str(path))
    wanted = namespace_of(name, server)
    for other_name, other in existing.servers.items():
        if wanted and namespace_of(other_name, other) == wanted:
            raise RegistryError(
                f"namespace {wanted!r} is already used by server {other_name!r}; "
                "pick another name or pass --namespace"
            )
    servers.add(name, server_table(server))
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


# --- Claude Desktop -----------------------------------------------------------------------------


def _safe_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-_") or "server"
    return name[:48]


def servers_from_claude_desktop(data: Mapping[str, Any]) -> dict[str, ServerConfig]:
    """Registry entries for a Claude Desktop config's `mcpServers` block."""
    block = data.get("mcpServers")
    if not isinstance(block, Mapping):
        raise RegistryError("the file has no 'mcpServers' object")
    result: dict[str, ServerConfig] = {}
    for raw_name, entry in block.items():
        if not isinstance(entry, Mapping):
            raise RegistryError(f"mcpServers.{raw_name}: expected an object")
        fields: dict[str, Any] = {}
        if "command" in entry:
            fields["command"] = entry["command"]
            fields["args"] = list(entry.get("args") or [])
            if entry.get("env"):
                fields["env"] = dict(entry["env"])
            if entry.get("cwd"):
                fields["cwd"] = entry["cwd"]
        elif "url" in entry:
            fields["url"] = entry["url"]
            if entry.get("headers"):
                fields["headers"] = dict(entry["headers"])
            if entry.get("type") == "sse" or entry.get("transport") == "sse":
                fields["transport"] = "sse"
        else:
            raise RegistryError(f"mcpServers.{raw_name}: has neither 'command' nor 'url'")
        try:
            result[_safe_name(str(raw_name))] = server_config(fields, key=f"mcpServers.{raw_name}")
        except ConfigError as exc:
            raise RegistryError(str(exc)) from None
    return result


def is_mcpgw_entry(server: ServerConfig) -> bool:
    if not isinstance(server, StdioServer):
        return False
    return Path(server.command).name == "mcpgw" or server.args[:2] == ["-m", "mcpgw"]


def import_claude_desktop(path: Path, source: Path) -> tuple[list[str], list[str]]:
    """Add the servers of a Claude Desktop config; returns (added, skipped-with-reason)."""
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{source}: file not found") from None
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{source}: invalid JSON: {exc}") from exc
    found = servers_from_claude_desktop(data)
    doc = _read(path)
    servers = _servers(doc)
    added, skipped = [], []
    for name, server in found.items():
        if is_mcpgw_entry(server):
            skipped.append(f"{name} (that is mcpgw itself)")
        elif name in servers:
            skipped.append(f"{name} (already in the registry)")
        else:
            servers.add(name, server_table(server))
            added.append(name)
    if added:
        _write(path, doc)
    return added, skipped


def claude_desktop_entry(
    config: Path | None, *, name: str = "mcpgw", extra_args: list[str] | None = None
) -> dict[str, Any]:
    """The `mcpServers` entry that starts this mcpgw over stdio."""
    exe = Path(sys.executable).parent / "mcpgw"
    args = ["serve", "--transport", "stdio"]
    if config is not None:
        args += ["--config", str(config.resolve())]
    args += extra_args or []
    if exe.exists():
        return {name: {"command": str(exe), "args": args}}
    return {name: {"command": sys.executable, "args": ["-m", "mcpgw", *args]}}


def merge_into_claude_desktop(file: Path, entry: Mapping[str, Any]) -> None:
    """Merge `entry` into the `mcpServers` of a Claude Desktop config, keeping everything else."""
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = json.loads(file.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{file}: invalid JSON, not touching it: {exc}") from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{file}: expected a JSON object at the top level")
    block = data.setdefault("mcpServers", {})
    if not isinstance(block, dict):
        raise RegistryError(f"{file}: 'mcpServers' is not an object")
    block.update(entry)
    write_atomically(file, json.dumps(data, indent=2) + "\n")
