"""Registry edits through the CLI: comments and order kept, collisions refused, checks before adding."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import SERVERS, UPSTREAM
from mcpgw import config
from mcpgw.cli import cli

COMMENTED = """\
# my registry, hand written
[gateway]
timeout = 30  # seconds

# the GitHub server
[servers.github]
url = "https://api.example.com/mcp"  # hosted
headers = { Authorization = "Bearer ${GITHUB_TOKEN}" }

[servers.files]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
"""


def run(*args: str) -> tuple[int, str]:
    """Exit code and everything shown (stdout and stderr)."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def run_json(*args: str) -> dict[str, Any]:
    """Exit code and the JSON document printed on stdout (logs go to stderr)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "servers.toml"
    path.write_text(COMMENTED)
    return path


def test_add_server_keeps_comments_and_order(registry: Path) -> None:
    code, output = run(
        "add-server",
        "--config",
        str(registry),
        "--no-check",
        "--env",
        "A=1",
        "local",
        "--",
        "python",
        "-m",
        "thing",
        "--flag",
    )
    assert code == 0, output
    text = registry.read_text()
    assert text.startswith(COMMENTED.rstrip("\n"))  # everything before is untouched, comments included
    added = config.load(registry)[0].servers["local"]
    assert added.command == "python" and added.args == ["-m", "thing", "--flag"] and added.env == {"A": "1"}
    assert list(config.load(registry)[0].servers) == ["github", "files", "local"]


def test_add_url_server_with_headers_and_sse(registry: Path) -> None:
    code, output = run(
        "add-server",
        "-c",
        str(registry),
        "--no-check",
        "remote",
        "--url",
        "http://127.0.0.1:9/sse",
        "--sse",
        "--header",
        "X-Key=${KEY}",
    )
    assert code == 0, output
    server = config.load(registry)[0].servers["remote"]
    assert server.kind == "sse" and server.headers == {"X-Key": "${KEY}"}


def test_add_server_refuses_a_colliding_name(registry: Path) -> None:
    before = registry.read_text()
    code, output = run("add-server", "-c", str(registry), "--no-check", "github", "--", "echo")
    assert code == 2
    assert "already exists" in output
    assert registry.read_text() == before


def test_add_server_refuses_a_colliding_namespace(registry: Path) -> None:
    code, output = run(
        "add-server", "-c", str(registry), "--no-check", "gh2", "--namespace", "files", "--", "echo"
    )
    assert code == 2
    assert "namespace 'files' is already used by server 'files'" in output


def test_add_server_needs_a_command_or_url(registry: Path) -> None:
    code, output = run("add-server", "-c", str(registry), "--no-check", "empty")
    assert code == 2 and "give a command" in output
    code, output = run("add-server", "-c", str(registry), "--no-check", "bad", "--url", "ftp://x")
    assert code == 2 and "not an http:// or https:// URL" in output


def test_add_server_refusal_names_the_key_it_would_write(registry: Path) -> None:
    before = registry.read_text()
    code, output = run("add-server", "-c", str(registry), "--no-check", "bad", "--url", "http://")
    assert code == 2 and "servers.bad.url: 'http://' has no host" in output
    assert registry.read_text() == before


def test_list_servers_shows_each_kind_and_its_target(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(
        "[servers.local]\ncommand = 'echo'\nargs = ['hi']\n"
        "[servers.remote]\nurl = 'https://h/mcp'\n"
        "[servers.old]\nurl = 'http://h/sse'\ntransport = 'sse'\n"
    )
    rows = {row["name"]: row for row in run_json("list-servers", "-c", str(path), "--json")["servers"]}
    assert (rows["local"]["kind"], rows["local"]["target"]) == ("stdio", "echo hi")
    assert (rows["remote"]["kind"], rows["remote"]["target"]) == ("http", "https://h/mcp")
    assert (rows["old"]["kind"], rows["old"]["target"]) == ("sse", "http://h/sse")


TINY = SERVERS / "tiny.py"
"""A server with seven tools (`echo`, `pid`, ...), standard library only: it starts in milliseconds where
our FastMCP upstream takes a CPU second. For the tests that need any working server."""


def test_add_server_checks_by_connecting(registry: Path) -> None:
    code, output = run("add-server", "-c", str(registry), "up", "--", sys.executable, str(TINY))
    assert code == 0, output
    assert "checked up: 7 tools" in output
    assert "up" in config.load(registry)[0].servers


def test_add_server_check_failure_adds_nothing(registry: Path, tmp_path: Path) -> None:
    before = registry.read_text()
    code, output = run("add-server", "-c", str(registry), "broken", "--", str(tmp_path / "no-such-command"))
    assert code == 2
    assert "did not start" in output and "--no-check" in output
    assert registry.read_text() == before


def test_remove_enable_disable(registry: Path) -> None:
    assert run("disable", "-c", str(registry), "files")[0] == 0
    assert config.load(registry)[0].servers["files"].enabled is False
    assert "# the GitHub server" in registry.read_text()
    assert run("enable", "-c", str(registry), "files")[0] == 0
    assert config.load(registry)[0].servers["files"].enabled is True
    assert run("remove-server", "-c", str(registry), "github")[0] == 0
    assert list(config.load(registry)[0].servers) == ["files"]
    code, output = run("remove-server", "-c", str(registry), "github")
    assert code == 2 and "no server named 'github'" in output


def test_edit_of_a_broken_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text("[servers.a]\ncommand = 'x'\nbogus = 1\n")
    code, output = run("add-server", "-c", str(path), "--no-check", "b", "--", "echo")
    assert code == 2
    assert "servers.a.bogus: unknown key" in output
    assert "bogus = 1" in path.read_text()


def test_add_server_creates_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "servers.toml"
    code, _ = run("add-server", "-c", str(path), "--no-check", "one", "--", "echo", "hi")
    assert code == 0
    assert config.load(path)[0].servers["one"].command == "echo"
    assert path.read_text().startswith("# mcpgw registry")


def test_list_servers_plain_and_json(registry: Path) -> None:
    data = run_json("list-servers", "-c", str(registry), "--json")
    rows = data["servers"]
    assert [r["name"] for r in rows] == ["github", "files"]
    assert rows[0]["kind"] == "http" and rows[1]["kind"] == "stdio"
    code, output = run("list-servers", "-c", str(registry))
    assert code == 0 and "github" in output and "files" in output


def test_list_servers_check_reports_status_era_tools_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(f"""
[servers.up]
command = "{sys.executable}"
args = ["{UPSTREAM}"]
[servers.dead]
command = "{tmp_path / "missing-binary"}"
[servers.off]
command = "echo"
enabled = false
""")
    result = CliRunner().invoke(cli, ["list-servers", "-c", str(path), "--check", "--json"])
    assert result.exit_code == 3, result.output  # a server failed: the exit code says so
    rows = {r["name"]: r for r in json.loads(result.stdout)["servers"]}
    assert rows["up"]["status"] == "ready" and rows["up"]["tools"] == 11
    assert rows["up"]["protocol"] == "2026-07-28" and rows["up"]["era"] == "stateless"
    assert rows["dead"]["status"] == "failed" and "missing-binary" in rows["dead"]["error"]
    assert rows["off"]["status"] == "disabled"


def test_tools_prints_the_merged_catalog(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(f"""
[servers.a]
command = "{sys.executable}"
args = ["{TINY}"]
[servers.b]
command = "{sys.executable}"
args = ["{TINY}"]
""")
    data = run_json("tools", "-c", str(path), "--json")
    names = [t["name"] for t in data["tools"]]
    assert "a__echo" in names and "b__echo" in names and len(names) == 14


def test_install_claude_desktop_prints_and_merges(registry: Path, tmp_path: Path) -> None:
    data = run_json("install", "claude-desktop", "-c", str(registry))
    entry = data["mcpServers"]["mcpgw"]
    assert entry["args"][-2:] == ["--config", str(registry.resolve())]
    assert "serve" in entry["args"]
    desktop = tmp_path / "claude_desktop_config.json"
    desktop.write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}))
    code, _ = run("install", "claude-desktop", "-c", str(registry), "--write", str(desktop))
    assert code == 0
    merged = json.loads(desktop.read_text())
    assert merged["theme"] == "dark"
    assert set(merged["mcpServers"]) == {"other", "mcpgw"}


def test_install_refuses_to_touch_a_broken_desktop_file(registry: Path, tmp_path: Path) -> None:
    desktop = tmp_path / "claude_desktop_config.json"
    desktop.write_text("{not json")
    code, output = run("install", "claude-desktop", "-c", str(registry), "--write", str(desktop))
    assert code == 2 and "invalid JSON" in output
    assert desktop.read_text() == "{not json"


def test_import_claude_desktop(registry: Path, tmp_path: Path) -> None:
    desktop = tmp_path / "claude_desktop_config.json"
    desktop.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "sqlite db": {
                        "command": "uvx",
                        "args": ["mcp-server-sqlite"],
                        "env": {"DB": "/tmp/x.db"},
                    },
                    "remote": {"url": "https://example.com/mcp", "headers": {"X": "1"}},
                    "files": {"command": "npx", "args": ["x"]},
                    "mcpgw": {"command": "/usr/bin/mcpgw", "args": ["serve"]},
                }
            }
        )
    )
    code, output = run("import", "claude-desktop", "-c", str(registry), str(desktop))
    assert code == 0, output
    servers = config.load(registry)[0].servers
    assert servers["sqlite-db"].command == "uvx" and servers["sqlite-db"].env == {"DB": "/tmp/x.db"}
    assert servers["remote"].url == "https://example.com/mcp"
    assert "files (already in the registry)" in output
    assert "mcpgw (that is mcpgw itself)" in output
    assert "# the GitHub server" in registry.read_text()


def test_import_of_a_file_without_servers_fails_clearly(registry: Path, tmp_path: Path) -> None:
    desktop = tmp_path / "c.json"
    desktop.write_text("{}")
    code, output = run("import", "claude-desktop", "-c", str(registry), str(desktop))
    assert code == 2 and "no 'mcpServers'" in output


def test_import_of_a_bad_entry_names_it_and_adds_nothing(registry: Path, tmp_path: Path) -> None:
    desktop = tmp_path / "c.json"
    desktop.write_text(
        json.dumps({"mcpServers": {"ok": {"command": "echo"}, "remote": {"url": "ftp://example.com/mcp"}}})
    )
    before = registry.read_text()
    code, output = run("import", "claude-desktop", "-c", str(registry), str(desktop))
    assert code == 2 and "mcpServers.remote.url: 'ftp://example.com/mcp' is not an http://" in output
    assert registry.read_text() == before


def test_import_keeps_sse_entries_sse(registry: Path, tmp_path: Path) -> None:
    desktop = tmp_path / "c.json"
    desktop.write_text(json.dumps({"mcpServers": {"old": {"type": "sse", "url": "http://h/sse"}}}))
    code, output = run("import", "claude-desktop", "-c", str(registry), str(desktop))
    assert code == 0, output
    assert config.load(registry)[0].servers["old"].kind == "sse"
    assert 'transport = "sse"' in registry.read_text()


def test_serve_with_a_broken_registry_exits_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text("[servers.a]\nurl = 'ftp://nope'\n")
    code, output = run("serve", "-c", str(path))
    assert code == 2
    assert f"{path}: servers.a.url" in output
