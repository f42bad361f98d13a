"""Without a lock file every item is served with a warning: the listings say so in one line, with the
count and the command that lists them, and `serve --log-level warning` does not mention it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from conftest import SERVERS, mcpgw_command, write_registry
from mcpgw.cli import cli

# Seven tools and nothing else; standard library only, so each listing starts it in milliseconds.
TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_tools_sums_up_the_warnings_in_one_line(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": TINY})
    brief = run("tools", "-c", str(config)).stdout
    lines = [line for line in brief.splitlines() if "served with warnings" in line]
    assert len(lines) == 1, brief
    [line] = lines
    assert "served with warnings: 7 (production mode would withhold these; 7: there is no lock file)" in line
    assert f"`mcpgw tools -c {config} --warnings` lists them" in line
    assert "there is no lock file" not in brief.replace(line, "")  # no column, no table of them
    full = run("tools", "-c", str(config), "--warnings").stdout
    assert full.count("there is no lock file") >= 7  # the command it names lists every one


def test_list_servers_check_sums_up_the_warnings_in_one_line(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": TINY})
    brief = run("list-servers", "-c", str(config), "--check").stdout
    assert brief.count("there is no lock file") == 1
    assert f"`mcpgw list-servers -c {config} --check --warnings` lists them" in brief
    full = run("list-servers", "-c", str(config), "--check", "--warnings").stdout
    assert full.count("there is no lock file") == 7
    personas = run("personas", "-c", str(config)).stdout
    assert personas.count("there is no lock file") == 1 and "mcpgw personas -c" in personas


def test_no_lock_file_is_not_a_warning_in_the_serve_log(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": TINY})

    def log(level: str) -> str:
        done = subprocess.run(
            mcpgw_command("serve", "-c", str(config), "--log-level", level),
            stdin=subprocess.DEVNULL,  # end of input: the gateway starts, then stops
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stderr

    assert "no lock file" in log("info")
    quiet = log("warning")
    assert "no lock file" not in quiet and "Traceback" not in quiet
