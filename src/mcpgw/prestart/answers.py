"""The answers a stdio gateway saved for its opening requests, and the digest they are keyed by.

Owns: the file next to the registry (`servers.toml` -> `servers.answers.json`, owner-only), which
holds, per digest of the inputs, the results the full gateway gave to `initialize`,
`server/discover` and the first page of each list; computing that digest; reading the file (only
one owned by this user and writable by nobody else: its answers are served as they are) and
writing it whole.

The inputs digest covers what an answer can depend on: the registry file's bytes, the pin lock
file, the secrets file, the remembered catalog (`core.memory`), the values of the environment
variables the registry names as `${VAR}` and of every `MCPGW_*` one, the persona, and the code
(mcpgw's modules, the mcp SDK's, the interpreter). Each answer is then keyed by the request
itself (method and params) and, over the handshake, the connection's `initialize` params. Any
difference is a miss: the request goes the normal path. Standard library only: read before the
heavy imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

FORMAT = 1
METHODS = frozenset(
    {
        "initialize",
        "server/discover",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
    }
)
"""The requests whose answers are saved and given early (lists: the first page only)."""
KEEP = 8
"""Digests kept in the file (personas, protocol versions, recent registries); older ones are dropped."""
_ENV_RE = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def answers_path(registry_path: str | Path) -> str:
    """Where the answers of `registry_path` are saved (`servers.toml` -> `servers.answers.json`)."""
    return os.path.splitext(registry_path)[0] + ".answers.json"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _code_stamp() -> bytes:
    """mcpgw's modules (path, size, mtime), the mcp SDK's entry modules, and the interpreter: an
    upgrade or an edited source file is another gateway, whose answers may be shaped otherwise."""
    parts = [sys.version, sys.executable]
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    for folder, _, names in sorted(os.walk(package)):
        for name in sorted(names):
            if name.endswith(".py"):
                info = os.stat(os.path.join(folder, name))
                parts.append(f"{folder}/{name}:{info.st_size}:{info.st_mtime_ns}")
    for module in ("mcp", "mcp_types"):  # located as the import system would, not imported
        for entry in sys.path:
            origin = os.path.join(entry or ".", module, "__init__.py")
            try:
                info = os.stat(origin)
            except OSError:
                continue
            parts.append(f"{origin}:{info.st_size}:{info.st_mtime_ns}")
            break
    return "\n".join(parts).encode()


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


def static_digest(
    files: Sequence[str], persona: str | None, *, environ: Mapping[str, str] | None = None
) -> str:
    """The digest of everything but the remembered catalog (which the gateway rewrites as it settles)."""
    env = os.environ if environ is None else environ
    digest = hashlib.sha256(b"mcpgw answers %d\0" % FORMAT)
    digest.update(_code_stamp())
    digest.update(b"\0persona\0" + canonical(persona))
    names: set[str] = {name for name in env if name.startswith("MCPGW_")}
    for path in files:
        content = _read_bytes(path)
        digest.update(b"\0file\0" + path.encode() + b"\0")
        digest.update(b"missing" if content is None else b"%d\0" % len(content) + content)
        names.update(match.decode() for match in _ENV_RE.findall(content or b""))
    for name in sorted(names):
        value = env.get(name)
        digest.update(
            b"\0env\0" + name.encode() + b"\0" + (b"unset" if value is None else b"=" + value.encode())
        )
    return digest.hexdigest()


def inputs_digest(static: str, memory: str) -> str:
    """The digest answers are saved under: `static_digest` and the remembered catalog's bytes."""
    content = _read_bytes(memory)
    digest = hashlib.sha256(static.encode() + b"\0memory\0" + memory.encode() + b"\0")
    digest.update(b"missing" if content is None else content)
    return digest.hexdigest()


def request_key(method: str, params: Any, session: Any) -> str:
    """One request's key: its method and params, and the `initialize` params of its connection
    (None without one: a 2026-07-28 request carries its version and capabilities itself)."""
    return hashlib.sha256(canonical([method, params, session])).hexdigest()


def read(path: str | Path) -> dict[str, Any] | None:
    """The saved answers at `path`, or None: missing, unreadable, damaged, of another format, or not
    the file's owner's alone (anyone else able to write it could put words in the gateway's mouth)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            return None
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = json.loads(file.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    files, memory, answers = data.get("files"), data.get("memory"), data.get("answers")
    if not (
        isinstance(files, list)
        and all(isinstance(f, str) for f in files)
        and isinstance(memory, str)
        and isinstance(answers, dict)
    ):
        return None
    return data


def save(
    path: str | Path,
    *,
    files: Sequence[str],
    memory: str,
    inputs: str,
    answers: Mapping[str, Any],
) -> bool:
    """Add `answers` under `inputs` and write the file whole, owner-only (it holds what upstreams
    describe). The `KEEP - 1` most recently written other digests stay (other personas, versions);
    the rest are dropped. False when nothing changed (the file is not rewritten) or it could not be
    written."""
    old = read(path)
    if old is not None and (old["files"], old["memory"]) != (list(files), memory):
        old = None  # another registry's layout: its digests cannot match any more
    saved: dict[str, Any] = dict(old["answers"]) if old is not None else {}
    current = dict(saved.get(inputs) or {})
    merged = {**current, **answers}
    if merged == current and inputs in saved:
        return False
    kept = [inputs, *[d for d in saved if d != inputs][: KEEP - 1]]
    saved = {d: merged if d == inputs else saved[d] for d in kept}
    text = json.dumps({"format": FORMAT, "files": list(files), "memory": memory, "answers": saved})
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return False
    return True
