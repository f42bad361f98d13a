"""Turning a client's server entries into registry entries, with literal secrets moved out.

Owns: what a client entry means as a `ServerConfig` (`command`/`args`/`env`/`cwd`, `url` or
Windsurf's `serverUrl`, `headers`, `type`, `disabled`), the translation of client variables
(`${env:NAME}` and `${input:NAME}` become `${NAME}`), names made valid (`with.dots` ->
`with-dots`, told, never silent), and finding literal secrets (tokens and keys in `env`,
`headers`, `args` and URLs) so each becomes a `${VAR}` reference whose value goes to the
`[gateway] secrets_file`, a dotenv file kept at mode 0600.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcpgw.config.registry import server_config
from mcpgw.config.servers import ServerConfig
from mcpgw.detectors import SECRET_DETECTORS
from mcpgw.errors import ConfigError, RegistryError

SECRET_NAME = re.compile(
    r"token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth|"
    r"(?:^|[_-])(?:key|pat)$",
    re.IGNORECASE,
)
"""An env, header, flag or query parameter name whose value is a secret."""
_KNOWN = {"command", "args", "env", "cwd", "url", "serverUrl", "headers", "type", "transport", "disabled"}
_VARIABLE = re.compile(r"\$\{(env|input):([A-Za-z_][A-Za-z0-9_.-]*)\}")
_CLIENT_ONLY = re.compile(r"\$\{(workspaceFolder|userHome|pathSeparator|cwd)[^}]*\}")
_SCHEME = re.compile(r"(?i)^(bearer|basic|token|apikey)\s+(\S.*)$")


@dataclass
class Imported:
    """One client entry as a registry entry."""

    name: str
    source: str
    """Its name in the client file."""
    server: ServerConfig
    notices: list[str] = field(default_factory=list)


@dataclass
class Secrets:
    """The secrets file's values, and those this import adds to it."""

    known: dict[str, str]
    added: dict[str, str] = field(default_factory=dict)

    def reference(self, wanted: str, value: str, server: str) -> str:
        """`${NAME}` for `value`: a name already holding it, else a new one (made unique)."""
        for name, held in {**self.known, **self.added}.items():
            if held == value:
                return "${" + name + "}"
        base = _env_name(wanted)
        candidates = [base, _env_name(f"{server}_{wanted}")]
        candidates += [f"{candidates[1]}_{n}" for n in range(2, 100)]
        name = next(c for c in candidates if c not in self.known and c not in self.added)
        self.added[name] = value
        return "${" + name + "}"


def _env_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper() or "SECRET"
    return name if not name[0].isdigit() else f"_{name}"


def safe_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-_") or "server"
    return name[:48]


def convert(
    block: Mapping[str, Any], *, where: str, taken: Collection[str], secrets: Secrets
) -> list[Imported]:
    """Registry entries for a client's servers block (`where` names it in errors: `FILE: mcpServers`).

    Validated as a whole first: one bad entry refuses the import with its name, adding nothing.
    """
    result: list[Imported] = []
    names = set(taken)
    for raw, entry in block.items():
        key = f"{where}.{raw}"
        if not isinstance(entry, Mapping):
            raise RegistryError(f"{key}: expected an object, not {type(entry).__name__}")
        notices: list[str] = []
        name = safe_name(str(raw))
        if name != raw:
            notices.append(f"renamed {raw!r} to {name!r} (server names are letters, digits, '-' and '_')")
        fields = _fields(entry, key, notices)
        _move_secrets(fields, name, secrets, notices)
        try:
            server = server_config(fields, key=key)
        except ConfigError as exc:
            raise RegistryError(str(exc)) from None
        result.append(Imported(name, str(raw), server, notices))
    # Renamed entries may meet each other (`a.b` and `a-b`) or a registry server: a suffix parts them.
    for item in result:
        if item.name in names and (item.name != item.source or item.name not in taken):
            base, n = item.name, 2
            while f"{base[:45]}-{n}" in names:
                n += 1
            item.name = f"{base[:45]}-{n}"
            item.notices.append(f"named {item.name!r}: {base!r} was taken")
        names.add(item.name)
    return result


def _fields(entry: Mapping[str, Any], key: str, notices: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    kind = str(entry.get("type") or entry.get("transport") or "")
    url = entry.get("url", entry.get("serverUrl"))
    for name, shape in (("args", list), ("env", Mapping), ("headers", Mapping)):
        if entry.get(name) is not None and not isinstance(entry[name], shape):
            what = "a list of strings" if shape is list else "an object of strings"
            raise RegistryError(f"{key}.{name}: expected {what}, not {type(entry[name]).__name__}")
    if "command" in entry:
        fields["command"] = entry["command"]
        if entry.get("args"):
            fields["args"] = list(entry["args"])
        if entry.get("env"):
            fields["env"] = dict(entry["env"])
        if entry.get("cwd"):
            fields["cwd"] = entry["cwd"]
    elif url is not None:
        fields["url"] = url
        if entry.get("headers"):
            fields["headers"] = dict(entry["headers"])
        if kind == "sse":
            fields["transport"] = "sse"
        elif not kind and str(url).split("?")[0].rstrip("/").endswith("/sse"):
            # Windsurf's `serverUrl` and Cursor's `url` serve both transports with no type key.
            fields["transport"] = "sse"
            notices.append("its URL ends in /sse: added as a legacy SSE server")
        elif kind not in ("", "http", "streamable-http", "streamableHttp", "streamable_http"):
            raise RegistryError(f"{key}.type: {kind!r} is not a transport mcpgw knows (http or sse)")
    else:
        raise RegistryError(f"{key}: has neither 'command' nor 'url'")
    if entry.get("disabled") is True:
        fields["enabled"] = False
        notices.append("disabled in the client: added disabled")
    ignored = sorted(set(entry) - _KNOWN)
    if "envFile" in ignored:
        notices.append(f"its envFile {entry['envFile']!r} is not read: put those values in the secrets file")
    if ignored:
        notices.append(f"ignored keys mcpgw has no use for: {', '.join(ignored)}")
    translated: dict[str, Any] = _translated(fields, notices)
    return translated


def _translated(value: Any, notices: list[str]) -> Any:
    """Client variables in every string: `${env:X}`/`${input:X}` -> `${X}`; the rest are flagged."""
    if isinstance(value, dict):
        return {k: _translated(v, notices) for k, v in value.items()}
    if isinstance(value, list):
        return [_translated(v, notices) for v in value]
    if not isinstance(value, str):
        return value
    for match in _VARIABLE.finditer(value):
        if match.group(1) == "input":
            name = _env_name(match.group(2))
            notice = (
                f"the client asked the user for ${{input:{match.group(2)}}}: "
                f"set {name} in the environment or the secrets file"
            )
            if notice not in notices:
                notices.append(notice)
    for match in _CLIENT_ONLY.finditer(value):
        notices.append(f"{match.group()} is the client's own variable: replace it with a path")
    return _VARIABLE.sub(
        lambda m: "${" + (m.group(2) if m.group(1) == "env" else _env_name(m.group(2))) + "}", value
    )


def _move_secrets(fields: dict[str, Any], server: str, secrets: Secrets, notices: list[str]) -> None:
    moved: list[str] = []
    if not all(isinstance(v, str) for key in ("env", "headers", "args") for v in _values(fields.get(key))):
        return  # validation names the value that is not text

    def move(value: str, wanted: str, where: str) -> str:
        if not value or "${" in value:
            return value
        moved.append(where)
        return secrets.reference(wanted, value, server)

    for name, value in list(fields.get("env", {}).items()):
        if SECRET_NAME.search(name) or _has_token(value):
            fields["env"][name] = move(value, name, f"env.{name}")
    for name, value in list(fields.get("headers", {}).items()):
        scheme = _SCHEME.match(value)
        wanted = f"{server}_token" if name.lower() == "authorization" else f"{server}_{name}"
        if scheme and (SECRET_NAME.search(name) or _has_token(value)):
            fields["headers"][name] = f"{scheme.group(1)} {move(scheme.group(2), wanted, f'headers.{name}')}"
        elif SECRET_NAME.search(name) or _has_token(value):
            fields["headers"][name] = move(value, wanted, f"headers.{name}")
    args = fields.get("args", [])
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if eq and flag.startswith("-") and SECRET_NAME.search(flag):
            args[i] = f"{flag}={move(value, f'{server}_{flag}', f'args[{i}]')}"
        elif i and args[i - 1].startswith("-") and "=" not in args[i - 1] and SECRET_NAME.search(args[i - 1]):
            args[i] = move(arg, f"{server}_{args[i - 1]}", f"args[{i}]")
        elif _has_token(arg):
            args[i] = move(arg, f"{server}_secret", f"args[{i}]")
    if "url" in fields:
        fields["url"] = re.sub(
            r"([?&])([^=&#]+)=([^&#]+)",
            lambda m: (
                m.group(1)
                + m.group(2)
                + "="
                + (
                    move(m.group(3), f"{server}_{m.group(2)}", "url")
                    if SECRET_NAME.search(m.group(2))
                    else m.group(3)
                )
            ),
            fields["url"],
        )
    if moved:
        notices.append(f"moved literal secrets to the secrets file: {', '.join(moved)}")


def _values(block: Any) -> list[Any]:
    if isinstance(block, Mapping):
        return list(block.values())
    return list(block or [])


def _has_token(value: str) -> bool:
    return any(next(detector.spans(value), None) is not None for detector in SECRET_DETECTORS)


# --- the secrets file ---------------------------------------------------------------------------


def read_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def store_secrets(path: Path, values: Mapping[str, str]) -> None:
    """Append `values` to the dotenv file at `path`, created 0600; one readable by others is refused
    (its mode is the user's to change, not ours)."""
    if not values:
        return
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RegistryError(
                f"{path}: the secrets file is readable by other users (mode {mode:04o}); "
                "chmod 600 it and import again (nothing was changed)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        if handle.tell() and not path.read_text(encoding="utf-8").endswith("\n"):
            handle.write("\n")
        for name, value in values.items():
            handle.write(f"{name}={_quoted(value)}\n")


def _quoted(value: str) -> str:
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
