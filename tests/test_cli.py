"""The `mcpgw` entry point: every command is registered, and help and version stay light."""

from __future__ import annotations

import subprocess
import sys

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
    "stats",
}

HEAVY = ("mcp.server", "mcp.client", "fastmcp", "litellm", "uvicorn", "starlette", "mcpgw.server")
"""What a command imports only when it runs: the server stack, the model router, the gateway."""

HEAVY_MCPGW = ("mcpgw.assembly", "mcpgw.core.gateway", "mcpgw.upstream.session", "mcpgw.security.review")


def test_every_command_is_registered() -> None:
    assert set(cli.commands) == COMMANDS


def test_help_and_version_do_not_import_the_server_stack() -> None:
    script = (
        "import sys\n"
        "from mcpgw.cli import main\n"
        "for args in (['--help'], ['--version'], ['pin', '--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (args, exc.code)\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split("MODULES", 1)[1].split())
    assert "mcpgw.cli" in loaded
    assert not {m for m in loaded if m.startswith(HEAVY + HEAVY_MCPGW)}


def test_python_m_mcpgw_runs_the_same_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcpgw", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mcpgw, version ")
