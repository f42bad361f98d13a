"""`mcpgw install` and `mcpgw import` for every client: real-world files round trip, nothing is lost.

Each client's fixture (tests/fixtures/clients) is imported into a registry (secrets moved to the
secrets file, names made valid with a notice), then mcpgw is installed into the same file with
`--remove-imported`: the file keeps everything else byte for byte (comments, other keys, its
mode), a backup holds the original, and the client would start mcpgw instead of each server.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mcpgw import config
from mcpgw.cli import cli
from mcpgw.config import clients, jsonc

FIXTURES = Path(__file__).parent / "fixtures" / "clients"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def fixture(tmp_path: Path, name: str, as_name: str | None = None) -> Path:
    target = tmp_path / "client" / (as_name or name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / name, target)
    return target


def client_servers(client: str, file: Path) -> dict[str, Any]:
    spec = clients.CLIENTS[client]
    data: Any = jsonc.loads(file.read_text())
    for key in spec.servers_path(file):
        data = data[key]
    assert isinstance(data, dict)
    return data


def secrets_of(registry: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    file = registry.parent / "secrets.env"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    return {k: v for k, v in dotenv_values(file).items() if v is not None}


ROUND_TRIPS = [
    # client, fixture, file name the client uses, servers expected in the registry
    ("claude-desktop", "claude_desktop_config.json", None, {"filesystem", "github", "brave-search"}),
    ("claude-code", "claude.json", ".claude.json", {"sentry", "context7"}),
    ("claude-code", "claude-code.mcp.json", ".mcp.json", {"api-server", "postgres"}),
    ("cursor", "cursor.mcp.json", "mcp.json", {"with-dots", "linear", "stripe", "remote-notes"}),
    ("vscode", "vscode.mcp.json", "mcp.json", {"Perplexity", "fetch", "github"}),
    ("vscode", "settings.json", None, {"memory", "git"}),
    ("windsurf", "windsurf.mcp_config.json", "mcp_config.json", {"zapier", "puppeteer", "ollama"}),
]


@pytest.mark.parametrize(("client", "name", "as_name", "expected"), ROUND_TRIPS)
def test_import_then_install_round_trip(
    tmp_path: Path, client: str, name: str, as_name: str | None, expected: set[str]
) -> None:
    file = fixture(tmp_path, name, as_name)
    file.chmod(0o640)
    original = file.read_text()
    registry = tmp_path / "servers.toml"

    imported = run("import", client, "-c", str(registry), str(file), "--keep-imported")
    assert imported.exit_code == 0, imported.output
    assert set(config.load(registry)[0].servers) == expected
    assert file.read_text() == original  # --keep-imported: the client file is untouched

    installed = run("install", client, "-c", str(registry), "--write", str(file), "--remove-imported")
    assert installed.exit_code == 0, installed.output
    entries = client_servers(client, file)
    assert list(entries) == ["mcpgw"]  # the imported servers are gone: no server starts twice
    entry = entries["mcpgw"]
    assert entry["args"][-2:] == ["--config", str(registry.resolve())]
    assert (entry.get("type") == "stdio") is (client in ("claude-code", "vscode"))
    assert stat.S_IMODE(file.stat().st_mode) == 0o640  # the mode is kept
    (backup,) = file.parent.glob(f"{file.name}.*.bak")
    assert backup.read_text() == original
    # Everything but the servers is kept as it was written.
    before, after = jsonc.loads(original), jsonc.loads(file.read_text())
    path = clients.CLIENTS[client].servers_path(file)
    assert {k: v for k, v in after.items() if k != path[0]} == {
        k: v for k, v in before.items() if k != path[0]
    }

    assert "// Perplexity" not in file.read_text()  # a removed server's comment goes with it
    # Importing the installed file again finds only mcpgw itself.
    again = run("import", client, "-c", str(registry), str(file), "--keep-imported")
    assert again.exit_code == 0, again.output
    assert "skipped mcpgw (that is mcpgw itself)" in again.output
    assert set(config.load(registry)[0].servers) == expected


def test_claude_desktop_secrets_become_references(tmp_path: Path) -> None:
    file = fixture(tmp_path, "claude_desktop_config.json")
    registry = tmp_path / "servers.toml"
    result = run("import", "claude-desktop", "-c", str(registry), str(file), "--keep-imported")
    assert result.exit_code == 0, result.output
    text = registry.read_text()
    assert "ghp_" not in text and "BSAbc123" not in text
    servers = config.load(registry)[0].servers
    assert servers["github"].env == {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_PERSONAL_ACCESS_TOKEN}"}
    assert servers["brave-search"].env == {"BRAVE_API_KEY": "${BRAVE_API_KEY}"}
    assert secrets_of(registry) == {
        "GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        "BRAVE_API_KEY": "BSAbc123def456ghi789",
    }
    assert config.load(registry)[0].gateway.secrets_file == str(registry.parent.resolve() / "secrets.env")
    assert "renamed 'brave.search' to 'brave-search'" in result.output
    assert "moved literal secrets to the secrets file: env.GITHUB_PERSONAL_ACCESS_TOKEN" in result.output


def test_secrets_in_headers_args_and_urls(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    for client, name, as_name in [
        ("claude-code", "claude.json", ".claude.json"),
        ("claude-code", "claude-code.mcp.json", ".mcp.json"),
        ("windsurf", "windsurf.mcp_config.json", "mcp_config.json"),
        ("cursor", "cursor.mcp.json", "mcp.json"),
    ]:
        result = run("import", client, "-c", str(registry), str(fixture(tmp_path, name, as_name)))
        assert result.exit_code == 0, result.output
    servers = config.load(registry)[0].servers
    secrets = secrets_of(registry)
    assert servers["sentry"].headers == {"Authorization": "Bearer ${SENTRY_TOKEN}"}
    assert secrets["SENTRY_TOKEN"].startswith("sntrys_")
    assert servers["context7"].args[-2:] == ["--api-key", "${CONTEXT7_API_KEY}"]
    assert servers["postgres"].args[-1] == "${POSTGRES_SECRET}"
    assert secrets["POSTGRES_SECRET"] == "postgresql://app:s3cretpw@localhost:5432/app"
    assert (
        servers["zapier"].url.endswith("/sse?api_key=${ZAPIER_API_KEY}") and servers["zapier"].kind == "sse"
    )
    assert servers["stripe"].env == {"STRIPE_SECRET_KEY": "${STRIPE_SECRET_KEY}"}
    assert servers["remote-notes"].headers == {"X-API-Key": "${REMOTE_NOTES_X_API_KEY}"}
    # References the client file already had stay references; nothing else is a secret.
    assert servers["api-server"].headers == {"Authorization": "Bearer ${API_KEY}"}
    assert servers["ollama"].env == {"OLLAMA_HOST": "http://localhost:11434"}
    assert servers["puppeteer"].enabled is False
    assert "sntrys_" not in registry.read_text() and "s3cretpw" not in registry.read_text()


def test_a_secret_already_stored_is_reused_and_a_clash_gets_the_server_prefix(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    (tmp_path / "secrets.env").write_text("BRAVE_API_KEY='another value'\n")
    (tmp_path / "secrets.env").chmod(0o600)
    result = run(
        "import", "claude-desktop", "-c", str(registry), str(fixture(tmp_path, "claude_desktop_config.json"))
    )
    assert result.exit_code == 0, result.output
    assert config.load(registry)[0].servers["brave-search"].env == {
        "BRAVE_API_KEY": "${BRAVE_SEARCH_BRAVE_API_KEY}"
    }
    assert secrets_of(registry)["BRAVE_API_KEY"] == "another value"


def test_vscode_variables_are_translated_with_notices(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    file = fixture(tmp_path, "vscode.mcp.json", "mcp.json")
    result = run("import", "vscode", "-c", str(registry), str(file))
    assert result.exit_code == 0, result.output
    servers = config.load(registry)[0].servers
    assert servers["Perplexity"].env == {"PERPLEXITY_API_KEY": "${PERPLEXITY_KEY}"}
    assert "set PERPLEXITY_KEY in the environment or the secrets file" in result.output
    result = run("import", "vscode", "-c", str(registry), str(fixture(tmp_path, "settings.json")))
    assert result.exit_code == 0, result.output
    assert "${workspaceFolder} is the client's own variable: replace it with a path" in result.output
    cursor = tmp_path / "client" / "cursor.json"
    cursor.write_text(json.dumps({"mcpServers": {"e": {"command": "x", "env": {"HOME_DIR": "${env:HOME}"}}}}))
    assert run("import", "cursor", "-c", str(registry), str(cursor)).exit_code == 0
    assert config.load(registry)[0].servers["e"].env == {"HOME_DIR": "${HOME}"}


def test_install_keeps_comments_and_trailing_commas_of_vscode_settings(tmp_path: Path) -> None:
    file = fixture(tmp_path, "settings.json")
    registry = tmp_path / "servers.toml"
    registry.write_text("")
    result = run("install", "vscode", "-c", str(registry), "--write", str(file), "--keep-imported")
    assert result.exit_code == 0, result.output
    text = file.read_text()
    assert '"editor.fontSize": 14, // my eyes' in text
    assert "/* MCP servers, the pre-1.102 way */" in text
    assert '"files.autoSave": "afterDelay",\n}' in text
    assert list(client_servers("vscode", file)) == ["memory", "git", "mcpgw"]


def test_install_writes_each_clients_default_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = tmp_path / "servers.toml"
    registry.write_text("")
    expected = {
        "claude-desktop": home / ".config/Claude/claude_desktop_config.json",
        "claude-code": home / ".claude.json",
        "cursor": home / ".cursor/mcp.json",
        "vscode": home / ".config/Code/User/mcp.json",
        "windsurf": home / ".codeium/windsurf/mcp_config.json",
    }
    for client, file in expected.items():
        result = run("install", client, "-c", str(registry), "--write", env={"HOME": str(home)})
        assert result.exit_code == 0, result.output
        assert f"{file} (new file)" in result.output
        assert list(client_servers(client, file)) == ["mcpgw"]


@pytest.mark.parametrize(
    ("platform", "client", "expected"),
    [
        ("darwin", "claude-desktop", "H/Library/Application Support/Claude/claude_desktop_config.json"),
        ("win32", "claude-desktop", "A/Claude/claude_desktop_config.json"),
        ("linux", "claude-desktop", "H/.config/Claude/claude_desktop_config.json"),
        ("win32", "claude-code", "H/.claude.json"),
        ("win32", "cursor", "H/.cursor/mcp.json"),
        ("darwin", "vscode", "H/Library/Application Support/Code/User/mcp.json"),
        ("win32", "vscode", "A/Code/User/mcp.json"),
        ("linux", "vscode", "H/.config/Code/User/mcp.json"),
        ("win32", "windsurf", "H/.codeium/windsurf/mcp_config.json"),
    ],
)
def test_default_paths_per_platform(platform: str, client: str, expected: str) -> None:
    home, appdata = Path("/h"), "/appdata"
    found = clients.default_file(
        clients.CLIENTS[client], platform=platform, home=home, environ={"APPDATA": appdata}
    )
    root, rest = expected.split("/", 1)
    assert found == Path(str(home) if root == "H" else appdata, rest)


def test_claude_desktop_from_the_microsoft_store(tmp_path: Path) -> None:
    local = tmp_path / "Local"
    packaged = local / "Packages/Claude_pzs8sxrjxfjjc/LocalCache/Roaming/Claude/claude_desktop_config.json"
    spec = clients.CLIENTS["claude-desktop"]
    environ = {"APPDATA": str(tmp_path / "Roaming"), "LOCALAPPDATA": str(local)}
    usual = tmp_path / "Roaming/Claude/claude_desktop_config.json"
    assert clients.default_file(spec, platform="win32", home=tmp_path, environ=environ) == usual
    packaged.parent.mkdir(parents=True)
    packaged.write_text("{}")
    assert clients.default_file(spec, platform="win32", home=tmp_path, environ=environ) == packaged


def test_project_files(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    registry.write_text("")
    for client, relative in [
        ("claude-code", ".mcp.json"),
        ("cursor", ".cursor/mcp.json"),
        ("vscode", ".vscode/mcp.json"),
    ]:
        assert (
            clients.default_file(clients.CLIENTS[client], project=True, cwd=tmp_path) == tmp_path / relative
        )
    result = run("install", "windsurf", "-c", str(registry), "--write", "--project")
    assert result.exit_code == 2 and "Windsurf has no project-level config file" in result.output


def test_printing_the_entry_uses_the_clients_key(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    registry.write_text("")
    vscode = json.loads(run("install", "vscode", "-c", str(registry)).stdout)
    assert vscode["servers"]["mcpgw"]["type"] == "stdio"
    cursor = json.loads(run("install", "cursor", "-c", str(registry)).stdout)
    assert "type" not in cursor["mcpServers"]["mcpgw"]


def test_install_keeps_a_symlink_and_a_private_mode(tmp_path: Path) -> None:
    real = fixture(tmp_path, "cursor.mcp.json", "real.json")
    real.chmod(0o600)
    link = tmp_path / "mcp.json"
    link.symlink_to(real)
    registry = tmp_path / "servers.toml"
    registry.write_text("")
    assert run("install", "cursor", "-c", str(registry), "--write", str(link)).exit_code == 0
    assert link.is_symlink() and "mcpgw" in client_servers("cursor", real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_import_json_summary(tmp_path: Path) -> None:
    registry = tmp_path / "servers.toml"
    result = run("import", "cursor", "-c", str(registry), str(fixture(tmp_path, "cursor.mcp.json")), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [a["name"] for a in data["added"]] == ["with-dots", "linear", "stripe", "remote-notes"]
    assert data["secrets"] == ["REMOTE_NOTES_X_API_KEY", "STRIPE_SECRET_KEY"]
    assert data["removed_from_client"] == []


def test_import_remove_imported_leaves_the_rest_of_the_file(tmp_path: Path) -> None:
    file = fixture(tmp_path, "claude.json", ".claude.json")
    registry = tmp_path / "servers.toml"
    result = run("import", "claude-code", "-c", str(registry), str(file), "--remove-imported")
    assert result.exit_code == 0, result.output
    data = json.loads(file.read_text())
    assert data["mcpServers"] == {} and data["numStartups"] == 42 and "projects" in data
    assert "mcpgw install claude-code --write" in result.output


# --- bad input: a clear error naming the file, nothing changed ---------------------------------


def _unchanged(tmp_path: Path, *args: str, expect: str) -> None:
    registry = tmp_path / "servers.toml"
    registry.write_text("# mine\n")
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run(*args[:2], "-c", str(registry), *args[2:])
    assert result.exit_code == 2, result.output
    assert expect in result.output, result.output
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_a_vscode_file_where_mcpservers_is_expected(tmp_path: Path) -> None:
    file = fixture(tmp_path, "vscode.mcp.json", "mcp.json")
    _unchanged(
        tmp_path,
        "import",
        "cursor",
        str(file),
        expect=f"{file}: has 'servers', not 'mcpServers': this looks like a VS Code file",
    )
    _unchanged(tmp_path, "install", "cursor", "--write", str(file), expect=f"{file}: has 'servers'")


def test_an_mcpservers_file_where_vscode_is_expected(tmp_path: Path) -> None:
    file = fixture(tmp_path, "cursor.mcp.json", "mcp.json")
    _unchanged(tmp_path, "import", "vscode", str(file), expect=f"{file}: has 'mcpServers', not 'servers'")


def test_invalid_json_is_not_touched(tmp_path: Path) -> None:
    file = tmp_path / "client" / "mcp.json"
    file.parent.mkdir()
    file.write_text('{"mcpServers": {"a": {"command": "x"},,}}')
    _unchanged(
        tmp_path,
        "install",
        "cursor",
        "--write",
        str(file),
        expect=f"{file}: invalid JSON (Expecting property name enclosed in double quotes at line 1 column 40",
    )
    _unchanged(tmp_path, "import", "cursor", str(file), expect="not touching it")


def test_a_file_without_servers_or_not_an_object(tmp_path: Path) -> None:
    file = tmp_path / "client" / "mcp.json"
    file.parent.mkdir()
    file.write_text('{"theme": "dark"}')
    _unchanged(tmp_path, "import", "cursor", str(file), expect=f"{file}: has no 'mcpServers' object")
    file.write_text('{"mcpServers": []}')
    _unchanged(tmp_path, "import", "cursor", str(file), expect=f"{file}: 'mcpServers' is not an object")
    _unchanged(
        tmp_path, "install", "cursor", "--write", str(file), expect=f"{file}: 'mcpServers' is not an object"
    )
    file.write_text("[]")
    _unchanged(
        tmp_path, "import", "cursor", str(file), expect=f"{file}: expected a JSON object at the top level"
    )


def test_a_settings_file_whose_mcp_is_not_an_object(tmp_path: Path) -> None:
    file = tmp_path / "client" / "settings.json"
    file.parent.mkdir()
    file.write_text('{"mcp": "off", // mine\n}')
    _unchanged(tmp_path, "install", "vscode", "--write", str(file), expect=f"{file}: 'mcp' is not an object")


def test_odd_entries_are_not_mistaken_for_mcpgw(tmp_path: Path) -> None:
    file = tmp_path / "client" / "mcp.json"
    file.parent.mkdir()
    file.write_text(json.dumps({"mcpServers": {"mcpgw": {"command": "", "args": "serve"}}}))
    _unchanged(tmp_path, "install", "cursor", "--write", str(file), expect="that is not mcpgw; pass --name")
    expect = "mcpServers.mcpgw.args: expected a list of strings, not str"
    _unchanged(tmp_path, "import", "cursor", str(file), expect=expect)
    file.write_text(json.dumps({"mcpServers": {"e": {"command": "", "env": {"A": "1"}}}}))
    _unchanged(tmp_path, "import", "cursor", str(file), expect="mcpServers.e.command: 'command' is empty")
    file.write_text(json.dumps({"mcpServers": {"e": {"command": "x", "env": {"API_KEY": 12345}}}}))
    _unchanged(
        tmp_path,
        "import",
        "cursor",
        str(file),
        expect="mcpServers.e.env.API_KEY: Input should be a valid string",
    )


def test_a_missing_file(tmp_path: Path) -> None:
    _unchanged(
        tmp_path, "import", "windsurf", str(tmp_path / "nope.json"), expect="nope.json: file not found"
    )


def test_a_bad_entry_is_named_and_nothing_is_added(tmp_path: Path) -> None:
    file = tmp_path / "client" / "mcp.json"
    file.parent.mkdir()
    file.write_text(
        json.dumps(
            {"mcpServers": {"ok": {"command": "x", "env": {"API_KEY": "k"}}, "bad": {"url": "ftp://h"}}}
        )
    )
    _unchanged(
        tmp_path,
        "import",
        "cursor",
        str(file),
        expect=f"{file}: mcpServers.bad.url: 'ftp://h' is not an http://",
    )
    assert not (tmp_path / "secrets.env").exists()


def test_a_secrets_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("X=1\n")
    secrets.chmod(0o644)
    file = fixture(tmp_path, "claude_desktop_config.json")
    _unchanged(
        tmp_path,
        "import",
        "claude-desktop",
        str(file),
        expect="readable by other users (mode 0644); chmod 600 it",
    )
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o644  # not ours to change


def test_install_refuses_to_replace_another_server_named_mcpgw(tmp_path: Path) -> None:
    file = tmp_path / "client" / "mcp.json"
    file.parent.mkdir()
    file.write_text(json.dumps({"mcpServers": {"mcpgw": {"command": "something-else"}}}))
    _unchanged(
        tmp_path,
        "install",
        "cursor",
        "--write",
        str(file),
        expect="already has a server named 'mcpgw' that is not mcpgw; pass --name",
    )


def test_unknown_client_type_is_named(tmp_path: Path) -> None:
    file = tmp_path / "client" / "mcp.json"
    file.parent.mkdir()
    file.write_text(json.dumps({"servers": {"w": {"type": "websocket", "url": "https://h/ws"}}}))
    _unchanged(
        tmp_path, "import", "vscode", str(file), expect="servers.w.type: 'websocket' is not a transport"
    )


def test_the_entry_replaces_an_older_mcpgw_entry(tmp_path: Path) -> None:
    file = tmp_path / "client" / "mcp.json"
    file.parent.mkdir()
    file.write_text(
        json.dumps({"mcpServers": {"mcpgw": {"command": "/old/bin/mcpgw", "args": ["serve"]}}}, indent=4)
    )
    registry = tmp_path / "servers.toml"
    registry.write_text("")
    assert run("install", "cursor", "-c", str(registry), "--write", str(file)).exit_code == 0
    entry = client_servers("cursor", file)["mcpgw"]
    assert entry["command"] != "/old/bin/mcpgw" and "--config" in entry["args"]
    assert file.read_text().startswith('{\n    "mcpServers": {\n        "mcpgw": {\n            "command"')
    assert os.path.exists(next(file.parent.glob("mcp.json.*.bak")))


def test_on_a_terminal_import_asks_before_removing(tmp_path: Path) -> None:
    """The prompt itself, answered on a real pseudo-terminal."""
    import pty
    import select
    import subprocess
    import sys
    import time

    file = fixture(tmp_path, "cursor.mcp.json", "mcp.json")
    registry = tmp_path / "servers.toml"
    master, slave = pty.openpty()
    command = [sys.executable, "-m", "mcpgw", "import", "cursor", "-c", str(registry), str(file)]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 90  # a hang guard only
        while b"(a backup is kept) [Y/n]" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        os.write(master, b"y\n")
        assert process.wait(90) == 0, seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    shown = seen.decode(errors="replace")
    assert "Remove with.dots, linear, stripe, remote-notes from" in shown, shown
    assert client_servers("cursor", file) == {}
