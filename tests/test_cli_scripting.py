"""The CLI in scripts: exit codes that say what happened, and `--json` on every command that
prints data (`list-servers --check`, `pin`, `add-server`, `import`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import SERVERS, write_registry
from mcpgw.cli import cli
from mcpgw.security import pins

DEAD = {"command": sys.executable, "args": ["-c", "import sys; sys.exit(7)"]}
# Any working server will do for exit codes and JSON shapes; this one starts in milliseconds (stdlib).
UP = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_list_servers_check_exits_3_when_a_server_failed(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": UP, "dead": DEAD})
    table = run("list-servers", "-c", str(config), "--check")
    assert table.exit_code == 3, table.output
    assert "1 server(s) not ready: dead" in table.stderr
    assert "up" in table.stdout and "dead" in table.stdout  # the table is still printed
    as_json = run("list-servers", "-c", str(config), "--check", "--json")
    assert as_json.exit_code == 3
    states = {row["name"]: row["status"] for row in json.loads(as_json.stdout)["servers"]}
    assert states["up"] == "ready" and states["dead"] in ("failed", "restarting")


def test_list_servers_check_exits_0_when_every_server_is_up(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": UP})
    result = run("list-servers", "-c", str(config), "--check")
    assert result.exit_code == 0, result.output


def test_pin_diff_exits_1_on_drift_and_0_when_up_to_date(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": UP})
    unpinned = run("pin", "-c", str(config), "--diff")
    assert unpinned.exit_code == 1 and "not pinned yet" in unpinned.stdout
    assert "1 server(s) differ from their pins: up" in unpinned.stderr

    pinned = run("pin", "-c", str(config), "--json")
    assert pinned.exit_code == 0, pinned.output
    data = json.loads(pinned.stdout)
    assert data["lock_file"] == str(tmp_path / "servers.lock")
    [server] = data["servers"]
    assert server["server"] == "up" and server["pinned"] and not server["was_pinned"]
    assert server["counts"]["tools"] > 0

    clean = run("pin", "-c", str(config), "--diff")
    assert clean.exit_code == 0 and "up: up to date" in clean.stdout

    lock_file = tmp_path / "servers.lock"
    lock = pins.read_lock(lock_file)
    assert lock is not None
    lock["up"]["tools"]["echo"] = pins.pin_of("tools", {"name": "echo", "description": "Echo, as it was."})
    pins.write_lock(lock_file, lock)
    drift = run("pin", "-c", str(config), "--diff", "--json")
    assert drift.exit_code == 1
    [server] = json.loads(drift.stdout)["servers"]
    assert [(c["kind"], c["name"], c["status"]) for c in server["changes"]] == [("tool", "echo", "changed")]
    assert '-  "description": "Echo, as it was."' in server["changes"][0]["diff"]
    assert pins.read_lock(lock_file) == lock  # --diff writes nothing


def test_add_server_json(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    up = UP
    result = run("add-server", "-c", str(config), "--json", "up", "--", up["command"], *up["args"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["added"] == "up" and data["file"] == str(config) and data["tools"] > 0
    assert data["findings"] == []
    unchecked = run("add-server", "-c", str(config), "--json", "--no-check", "other", "--", "true")
    assert json.loads(unchecked.stdout) == {
        "added": "other",
        "file": str(config),
        "tools": None,
        "findings": [],
    }


@pytest.mark.parametrize("client", ["claude-desktop"])
def test_import_json(tmp_path: Path, client: str) -> None:
    source = tmp_path / "client.json"
    source.write_text(
        json.dumps(
            {"mcpServers": {"fs": {"command": "npx", "args": ["-y", "x"]}, "mcpgw": {"command": "mcpgw"}}}
        )
    )
    config = tmp_path / "servers.toml"
    result = run("import", client, "-c", str(config), "--json", str(source))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [added["name"] for added in data["added"]] == ["fs"] and data["file"] == str(config)
    assert data["skipped"] == [{"from": "mcpgw", "reason": "that is mcpgw itself"}]
    assert data["client_file"] == str(source)


@pytest.mark.parametrize(
    "command",
    [
        ["tools"],
        ["personas"],
        ["list-servers"],
        ["add-server"],
        ["import", "claude-desktop"],
        ["pin"],
        ["logs"],
        ["stats"],
    ],
    ids=" ".join,
)
def test_every_command_that_prints_data_takes_json(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "--json" in result.stdout
