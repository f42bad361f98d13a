"""Replacing a file atomically with its mode kept: what the registry's editor, the lock file's writer
and the client configs' writer share.

Owns: `write_atomically`. Kept apart from `config.edit` so that a gateway writing its lock file does not
load tomlkit's document model just to replace a file (it costs about 0.8 MiB of RSS in `mcpgw serve`).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new one, never half.

    The file keeps its mode (mkstemp's 0600 would narrow it, silently); a new file gets the
    umask's; a symlinked file is written through the link, which stays a link."""
    path = path.resolve() if path.is_symlink() else path
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
