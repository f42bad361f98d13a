"""`${VAR}` expansion and command lookup, applied when an upstream is started.

Owns: replacing `${VAR}` and `${VAR:-default}` in registry values (an unset variable is a
`ConfigError` naming the key) and finding a bare command on PATH or beside the gateway's Python.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from mcpgw.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(value: str, *, key: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset variable without default is a `ConfigError`."""
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set", key=key)

    return _ENV_RE.sub(substitute, value)


def resolved_command(command: str) -> str:
    """A bare command is looked up on PATH, then beside the gateway's own Python (its venv's bin)."""
    if os.sep in command:
        return command
    found = shutil.which(command)
    if found:
        return found
    beside = shutil.which(command, path=str(Path(sys.executable).parent))
    return beside or command
