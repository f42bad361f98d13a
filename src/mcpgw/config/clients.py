"""The MCP clients mcpgw installs into and imports from, and the shape of their config files.

Owns: each client's default config files on macOS, Linux and Windows (user and project level),
the key its servers sit under (`mcpServers`, VS Code's `servers`, or `mcp.servers` in a VS Code
settings.json), the entry a client needs to start mcpgw, reading a client file with an error
that names it (a VS Code file given where `mcpServers` is expected), and writing it back
edited in place (`jsonc.Editor`) beside a backup, with its mode, owner-only or not, kept.

Paths (each client's documentation):
    claude-desktop  macOS ~/Library/Application Support/Claude/claude_desktop_config.json
                    Windows %APPDATA%\\Claude\\claude_desktop_config.json (a Microsoft Store install:
                    %LOCALAPPDATA%\\Packages\\Claude_*\\LocalCache\\Roaming\\Claude\\...)
                    Linux ~/.config/Claude/claude_desktop_config.json (community builds)
    claude-code     ~/.claude.json (user scope: its top-level mcpServers); project: .mcp.json
    cursor          ~/.cursor/mcp.json; project: .cursor/mcp.json
    vscode          the user profile's mcp.json (Code/User/mcp.json under ~/Library/Application
                    Support, %APPDATA% or ~/.config); project: .vscode/mcp.json; an older
                    settings.json keeps them under "mcp": {"servers": ...}
    windsurf        ~/.codeium/windsurf/mcp_config.json (URL servers as `serverUrl`)
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcpgw.config import jsonc
from mcpgw.config.files import write_atomically
from mcpgw.errors import RegistryError


@dataclass(frozen=True)
class Client:
    name: str
    title: str
    key: str
    """The object holding the servers: `mcpServers`, or `servers` (VS Code)."""
    typed: bool
    """Entries carry `"type": "stdio"` (Claude Code and VS Code write it)."""
    user: Mapping[str, str]
    """Platform (`darwin`, `linux`, `win32`) -> user file, `~`, `%APPDATA%` expanded."""
    project: str | None
    url_key: str = "url"

    def servers_path(self, file: Path) -> tuple[str, ...]:
        """Where the servers sit in `file`: VS Code's settings.json nests them in `mcp`."""
        if self.name == "vscode" and file.name == "settings.json":
            return ("mcp", "servers")
        return (self.key,)


_APP = "%APPDATA%"
CLIENTS: dict[str, Client] = {
    client.name: client
    for client in (
        Client(
            "claude-desktop",
            "Claude Desktop",
            "mcpServers",
            False,
            {
                "darwin": "~/Library/Application Support/Claude/claude_desktop_config.json",
                "win32": f"{_APP}/Claude/claude_desktop_config.json",
                "linux": "~/.config/Claude/claude_desktop_config.json",
            },
            None,
        ),
        Client(
            "claude-code",
            "Claude Code",
            "mcpServers",
            True,
            {"darwin": "~/.claude.json", "win32": "~/.claude.json", "linux": "~/.claude.json"},
            ".mcp.json",
        ),
        Client(
            "cursor",
            "Cursor",
            "mcpServers",
            False,
            {"darwin": "~/.cursor/mcp.json", "win32": "~/.cursor/mcp.json", "linux": "~/.cursor/mcp.json"},
            ".cursor/mcp.json",
        ),
        Client(
            "vscode",
            "VS Code",
            "servers",
            True,
            {
                "darwin": "~/Library/Application Support/Code/User/mcp.json",
                "win32": f"{_APP}/Code/User/mcp.json",
                "linux": "~/.config/Code/User/mcp.json",
            },
            ".vscode/mcp.json",
        ),
        Client(
            "windsurf",
            "Windsurf",
            "mcpServers",
            False,
            {
                "darwin": "~/.codeium/windsurf/mcp_config.json",
                "win32": "~/.codeium/windsurf/mcp_config.json",
                "linux": "~/.codeium/windsurf/mcp_config.json",
            },
            None,
            url_key="serverUrl",
        ),
    )
}


def default_file(
    client: Client,
    *,
    project: bool = False,
    platform: str = sys.platform,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """The client's config file on this platform: the user's, or (`project`) the one in `cwd`."""
    if project:
        if client.project is None:
            raise RegistryError(f"{client.title} has no project-level config file; drop --project")
        return (cwd or Path.cwd()) / client.project
    env = os.environ if environ is None else environ
    home = home or Path.home()
    template = client.user["darwin" if platform == "darwin" else "win32" if platform == "win32" else "linux"]
    if template.startswith(_APP):
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        found = Path(appdata, *template.removeprefix(_APP + "/").split("/"))
        if client.name == "claude-desktop" and not found.exists():
            # Installed from the Microsoft Store (MSIX), Claude keeps its roaming files in its package.
            local = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
            packaged = sorted(
                local.glob("Packages/Claude_*/LocalCache/Roaming/Claude/claude_desktop_config.json")
            )
            return packaged[0] if packaged else found
        return found
    return Path(home, *template.removeprefix("~/").split("/"))


def entry(
    client: Client, command: str, args: list[str], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The client's entry that starts a stdio server."""
    result: dict[str, Any] = {"type": "stdio"} if client.typed else {}
    result.update(command=command, args=list(args))
    if env:
        result["env"] = dict(env)
    return result


# --- reading ------------------------------------------------------------------------------------


def read(client: Client, file: Path, *, must_exist: bool = True) -> jsonc.Editor:
    """The file, parsed for editing; an error names the file and says what is wrong with it."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if must_exist:
            raise RegistryError(f"{file}: file not found") from None
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{file}: cannot read: {exc}") from None
    try:
        editor = jsonc.Editor(text)
    except jsonc.JsoncError as exc:
        raise RegistryError(f"{file}: invalid JSON ({exc}); not touching it") from None
    if not isinstance(editor.data, dict):
        raise RegistryError(f"{file}: expected a JSON object at the top level")
    _check_shape(client, file, editor.data, must_have=must_exist)
    return editor


def servers(client: Client, file: Path, editor: jsonc.Editor) -> dict[str, Any]:
    """The servers block of a file `read` accepted (empty when it has none yet)."""
    block: Any = editor.data
    for key in client.servers_path(file):
        block = block.get(key, {}) if isinstance(block, dict) else {}
    return dict(block)


def _check_shape(client: Client, file: Path, data: Mapping[str, Any], *, must_have: bool) -> None:
    path = client.servers_path(file)
    block: Any = data
    for key in path:
        block = block.get(key) if isinstance(block, Mapping) else None
    where = ".".join(path)
    if block is not None:
        if not isinstance(block, Mapping):
            raise RegistryError(f"{file}: '{where}' is not an object")
        return
    other = "servers" if client.key == "mcpServers" else "mcpServers"
    if isinstance(data.get(other), Mapping) or (other == "servers" and _nested_vscode(data)):
        owner = "VS Code" if other == "servers" else "Claude Desktop, Claude Code, Cursor or Windsurf"
        hint = "vscode" if other == "servers" else "cursor (or claude-desktop, claude-code, windsurf)"
        raise RegistryError(
            f"{file}: has '{other}', not '{where}': this looks like a {owner} file, not a "
            f"{client.title} one; for it: `mcpgw import {hint} FILE`"
        )
    if must_have:
        raise RegistryError(
            f"{file}: has no '{where}' object (a {client.title} file lists its servers there)"
        )


def _nested_vscode(data: Mapping[str, Any]) -> bool:
    mcp = data.get("mcp")
    return isinstance(mcp, Mapping) and isinstance(mcp.get("servers"), Mapping)


# --- writing ------------------------------------------------------------------------------------


def write(file: Path, editor: jsonc.Editor) -> Path | None:
    """Replace `file` with the edited text after copying it to a backup (returned; None for a new
    file). Its mode is kept (`files.write_atomically`); a symlink is written through."""
    target = file.resolve() if file.is_symlink() else file
    backup = None
    if target.exists():
        backup = _backup_name(target)
        shutil.copy2(target, backup)
    write_atomically(target, editor.dumps())
    return backup


def _backup_name(file: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = file.with_name(f"{file.name}.{stamp}.bak")
    n = 1
    while backup.exists():
        n += 1
        backup = file.with_name(f"{file.name}.{stamp}-{n}.bak")
    return backup
