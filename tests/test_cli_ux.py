"""What a user sees around the commands: progress while upstreams start, why one failed (its
stderr), checks before connecting, and one-line start-up errors with exit code 2."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import SERVERS, free_port, run_mcpgw, write_registry
from mcpgw import config
from mcpgw.cli import cli
from mcpgw.observe.logs import counted

FAILING = [
    sys.executable,
    "-c",
    "import sys; print('fatal: MY_API_KEY is not set', file=sys.stderr); sys.exit(1)",
]
"""An upstream that dies at start, saying why on stderr (as real servers do)."""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


# --- add-server --------------------------------------------------------------------------------


def test_add_server_refuses_a_taken_name_before_connecting(tmp_path: Path) -> None:
    registry = write_registry(tmp_path / "servers.toml", {"files": {"command": "echo"}})
    # A command that does not exist: connecting would fail with "did not start"; the name check comes first.
    result = run("add-server", "-c", str(registry), "files", "--", str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert "a server named 'files' already exists" in result.output and "did not start" not in result.output


def test_add_server_namespace_error_fits_what_was_passed(tmp_path: Path) -> None:
    registry = write_registry(tmp_path / "servers.toml", {"files": {"command": "echo"}})
    given = run(
        "add-server", "-c", str(registry), "other", "--namespace", "files", "--", str(tmp_path / "missing")
    )
    assert given.exit_code == 2
    assert "namespace 'files' is already used by server 'files'; pick another --namespace" in given.output
    assert "pass --namespace" not in given.output
    registry.write_text('[servers.files]\ncommand = "echo"\nnamespace = "x"\n')
    implied = run("add-server", "-c", str(registry), "x", "--", str(tmp_path / "missing"))
    assert "pick another name or pass --namespace" in implied.output


def test_add_server_era(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    result = run("add-server", "-c", str(registry), "--no-check", "--era", "stateless", "s", "--", "echo")
    assert result.exit_code == 0, result.output
    assert config.load(registry)[0].servers["s"].era == "stateless"
    bad = run("add-server", "-c", str(registry), "--no-check", "--era", "nope", "t", "--", "echo")
    assert bad.exit_code == 2 and "'nope' is not one of 'auto', 'handshake', 'stateless'" in bad.output


def test_add_server_shows_why_a_server_did_not_start(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    result = run("add-server", "-c", str(registry), "broken", "--", *FAILING)
    assert result.exit_code == 2
    assert "stderr: fatal: MY_API_KEY is not set" in result.output
    assert not registry.exists()


TINY = SERVERS / "tiny.py"
"""A server with seven tools (`echo`, `pid`, ...), standard library only: it starts in milliseconds where
our FastMCP upstream takes a CPU second. For the tests that need any working server."""


def test_list_servers_check_shows_progress_and_the_stderr_of_a_failed_server(tmp_path: Path) -> None:
    registry = write_registry(
        tmp_path / "servers.toml",
        {
            "up": {"command": sys.executable, "args": [str(TINY)]},
            "broken": {"command": FAILING[0], "args": FAILING[1:], "restart": False},
        },
    )
    result = CliRunner().invoke(cli, ["list-servers", "-c", str(registry), "--check", "--json"])
    assert "ready  up: 7 tools" in result.stderr
    assert "failed broken (" in result.stderr and "stderr: fatal: MY_API_KEY is not set" in result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["servers"]}
    assert "fatal: MY_API_KEY is not set" in rows["broken"]["error"]


def test_tools_shows_one_progress_line_per_server(tmp_path: Path) -> None:
    entry = {"command": sys.executable, "args": [str(TINY)]}
    registry = write_registry(tmp_path / "servers.toml", {"a": entry, "b": entry})
    result = CliRunner().invoke(cli, ["tools", "-c", str(registry), "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "ready" in line]
    assert sorted(line.split()[1] for line in lines) == ["a:", "b:"]
    json.loads(result.stdout)  # stdout holds only the result


# --- serve: one line and exit code 2 for every start-up failure --------------------------------


def test_serve_on_a_taken_port(tmp_path: Path) -> None:
    registry = write_registry(tmp_path / "servers.toml", {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_mcpgw("serve", "-c", str(registry), "-t", "http", "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        f"mcpgw: error: cannot listen on 127.0.0.1:{port}: Address already in use: another process"
        in done.stderr
    )


def test_serve_http_with_an_override_of_a_missing_tool(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    registry.write_text(
        f"[servers.up]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(TINY))}]\n"
        '[personas.p]\nservers = ["up"]\n[personas.p.tools.nope]\ndescription = "x"\n'
    )
    done = run_mcpgw("serve", "-c", str(registry), "-t", "http", "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Press Ctrl+C" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    reason = "persona 'p': override of tool 'nope', which does not exist in the catalog"
    assert last == f"mcpgw: error: personas.p.tools.nope: {reason}"


@pytest.mark.parametrize(
    ("number", "noun", "said"),
    [
        (0, "tool", "0 tools"),
        (1, "tool", "1 tool"),
        (1, "prompt", "1 prompt"),
        (2, "resource template", "2 resource templates"),
        (1.0, "day", "1 day"),
        (0.5, "day", "0.5 days"),
        (30.0, "day", "30 days"),
    ],
)
def test_counts_read_as_a_person_writes_them(number: float, noun: str, said: str) -> None:
    """What the CLI, the console and the log say of a server's tools: `fetch: 1 tool`, not `1 tools`."""
    assert counted(number, noun) == said
