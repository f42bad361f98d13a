"""The registry file: validation with file, key and reason; env expansion; the shipped default."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcpgw import config
from mcpgw.errors import ConfigError


def load_text(tmp_path: Path, text: str) -> config.Registry:
    path = tmp_path / "servers.toml"
    path.write_text(text)
    return config.load(path)[0]


def test_valid_registry_of_every_kind(tmp_path: Path) -> None:
    registry = load_text(
        tmp_path,
        """
[gateway]
timeout = 5
[servers.files]
command = "npx"
args = ["-y", "server-filesystem", "/tmp"]
env = { DEBUG = "1" }
[servers.github]
url = "https://api.example.com/mcp"
headers = { Authorization = "Bearer ${GITHUB_TOKEN}" }
timeout = 12.5
namespace = "gh"
[servers.legacy]
url = "http://127.0.0.1:9/sse"
transport = "sse"
enabled = false
""",
    )
    assert registry.servers["files"].kind == "stdio"
    assert registry.servers["github"].kind == "http"
    assert registry.servers["legacy"].kind == "sse"
    assert config.namespace_of("github", registry.servers["github"]) == "gh"
    assert config.call_timeout(registry, registry.servers["files"]) == 5
    assert config.call_timeout(registry, registry.servers["github"]) == 12.5
    assert list(registry.enabled_servers()) == ["files", "github"]


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[servers.a\ncommand = 'x'\n", None, "invalid TOML"),
        ("[servers.a]\ncommand = 'x'\ncolour = 'red'\n", "servers.a.colour", "unknown key"),
        ("[servers.a]\nargs = ['x']\n", "servers.a", "needs either 'command'"),
        ("[servers.a]\nurl = 'ftp://example.com'\n", "servers.a.url", "not an http:// or https:// URL"),
        ("[servers.a]\nurl = 'http://'\n", "servers.a.url", "has no host"),
        ("[servers.a]\ncommand = 'x'\nurl = 'http://h/mcp'\n", "servers.a", "has both"),
        ("[servers.a]\ncommand = 'x'\ntimeout = -1\n", "servers.a.timeout", "greater than 0"),
        ("[servers.a]\ncommand = 'x'\nnamespace = 'a__b'\n", "servers.a.namespace", "never '__'"),
        (
            "[servers.a]\ncommand = 'x'\n[servers.b]\ncommand = 'y'\nnamespace = 'a'\n",
            "servers",
            "share the namespace",
        ),
        ("[servers.a]\ncommand = 'x'\naliases = { long = 'bad name' }\n", "servers.a.aliases", "must match"),
        ("[gateway]\nport = 'http'\n", "gateway.port", "valid integer"),
        (
            "[servers.a]\ncommand = 'x'\ntool_timeouts = { slow = 0 }\n",
            "servers.a.tool_timeouts.slow",
            "greater than 0",
        ),
        (
            "[servers.a]\ncommand = 'x'\nmax_concurrent = 0\n",
            "servers.a.max_concurrent",
            "greater than or equal to 1",
        ),
        ("[gateway]\nmax_request_bytes = 10\n", "gateway.max_request_bytes", "greater than or equal to 1024"),
        ("[server.a]\ncommand = 'x'\n", "server", "unknown key"),
    ],
)
def test_broken_file_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str | None, reason: str
) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    error = caught.value
    assert error.file == str(path)
    assert error.key == key
    assert reason in str(error)
    assert str(error).startswith(str(path))


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")


def test_default_location_falls_back_to_the_shipped_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)
    registry, path = config.load(None)
    assert path is None
    assert set(registry.servers) == {"time", "everything"}


def test_repository_servers_toml_is_valid() -> None:
    registry, _ = config.load(Path(__file__).parent.parent / "servers.toml")
    assert registry.servers


def test_env_expansion() -> None:
    env = {"TOKEN": "s3cret"}
    assert config.expand("Bearer ${TOKEN}", key="k", environ=env) == "Bearer s3cret"
    assert config.expand("${MISSING:-fallback}", key="k", environ=env) == "fallback"
    with pytest.raises(ConfigError, match="environment variable MISSING is not set") as caught:
        config.expand("${MISSING}", key="servers.gh.headers.Authorization", environ=env)
    assert caught.value.key == "servers.gh.headers.Authorization"
