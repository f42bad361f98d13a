"""The `mcpgw` entry point: every command is registered, and help and version stay light."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from conftest import modules_after
from mcpgw.cli import COMMANDS as LAZY
from mcpgw.cli import cli

COMMANDS = {
    "serve",
    "tools",
    "personas",
    "list-servers",
    "add-server",
    "remove-server",
    "enable",
    "disable",
    "install",
    "import",
    "pin",
    "logs",
    "login",
    "logout",
    "stats",
    "admin",
}

HEAVY = ("mcp.server", "mcp.client", "fastmcp", "litellm", "uvicorn", "starlette", "mcpgw.server")
"""What a command imports only when it runs: the server stack, the model router, the gateway."""

HEAVY_MCPGW = ("mcpgw.assembly", "mcpgw.core.gateway", "mcpgw.upstream.session", "mcpgw.security.review")

NOT_FOR_TOP_HELP = (
    "mcp",
    "mcp_types",
    "pydantic",
    "litellm",
    "fastmcp",
    "anyio",
    "mcpgw.config",
    "mcpgw.cli.",
)
"""Not even these for `mcpgw --help` and `--version`: no command module is loaded for them."""


def test_every_command_is_registered() -> None:
    ctx = click.Context(cli)
    assert set(cli.list_commands(ctx)) == COMMANDS
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_help_lists_each_commands_own_summary_without_loading_it() -> None:
    ctx = click.Context(cli)
    for name, (_, _, summary) in LAZY.items():
        command = cli.get_command(ctx, name)
        assert command is not None
        assert summary == command.get_short_help_str(limit=10**6), name
    shown = CliRunner().invoke(cli, ["--help"]).output
    assert "Put mcpgw into a client's configuration" in shown


def test_help_and_version_do_not_import_the_server_stack() -> None:
    script = (
        "import sys\n"
        "from mcpgw.cli import main\n"
        "for args in (['--help'], ['--version'], ['pin', '--help'], ['serve', '--help'],\n"
        "             ['personas', 'draft', '--help'], ['personas', 'explain', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (args, exc.code)\n"
    )
    loaded = modules_after(script)
    assert "mcpgw.cli" in loaded
    assert not {m for m in loaded if m.startswith(HEAVY + HEAVY_MCPGW)}


def test_python_m_mcpgw_runs_the_same_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcpgw", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mcpgw, version ")


def test_top_help_and_version_load_no_command() -> None:
    for flag in ("--help", "--version"):
        script = (
            "import sys\nfrom mcpgw.cli import main\n"
            f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        )
        loaded = modules_after(script)
        heavy = {m for m in loaded if m.split(".")[0] in NOT_FOR_TOP_HELP}
        heavy |= {m for m in loaded if m.startswith(("mcpgw.config", "mcpgw.cli."))}
        assert not heavy, flag
        assert "mcpgw.cli" in loaded
