"""What every command shares: the `--config` and `--json` options and the registry file `--config` names.

Owns: how a command finds the registry it reads (`--config`, else `$MCPGW_CONFIG`,
else ./servers.toml, else the shipped default), the file an edit writes, and the one
`--json` every command that prints data takes (`json_option`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mcpgw import config as config_mod
from mcpgw.config import Registry

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    """`--config`/`-c FILE`, passed to the command as `config_path`."""
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Registry file (default: ${config_mod.ENV_CONFIG}, else ./servers.toml, "
        "else the shipped default).",
    )(func)


def json_option(func: F) -> F:
    """`--json`, passed to the command as `as_json`: its result as JSON on stdout, for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")(
        func
    )


def load_registry(config_path: Path | None) -> tuple[Registry, Path | None]:
    """The validated registry and the file it came from (None: the shipped default)."""
    return config_mod.load(config_path)


def edit_path(config_path: Path | None) -> Path:
    """The file an edit writes: `--config`, else the default path (created when it does not exist)."""
    return config_path or config_mod.default_path()
