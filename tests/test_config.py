"""The registry file: validation with file, key and reason; env expansion; the shipped default."""

from __future__ import annotations

import os
from collections import ChainMap
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
        # [limits] and [cluster]
        ("[limits.personas.ghost]\nconcurrent = 1\n", None, "limits.personas names persona 'ghost'"),
        ("[limits.principal]\n", "limits.principal", "set requests_per_minute, concurrent, or both"),
        ("[limits.principal]\nconcurrent = 0\n", "limits.principal.concurrent", "greater than 0"),
        ("[limits]\nper_user = 1\n", "limits.per_user", "unknown key"),
        ("[cluster]\nredis_url = 'http://x'\n", "cluster.redis_url", "not a redis://, rediss:// or unix://"),
        ("[cluster]\nreplica = 'r1'\n", "cluster.redis_url", "missing"),
        ("[cluster]\nredis_url = 'redis://h'\nreplica = 'a.b'\n", "cluster.replica", "must be 1-32 letters"),
        ("[cluster]\nredis_url = 'redis://h'\nlease = 0\n", "cluster.lease", "greater than 0"),
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


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (
            "[servers.a]\ncommand = 'x'\nheaders = { A = '1' }\n",
            "servers.a.headers",
            "'headers' applies to URL servers; use 'env' for a command",
        ),
        (
            "[servers.a]\ncommand = 'x'\n[servers.a.oauth]\ntoken_url = 'https://t'\nclient_id = 'c'\n"
            "client_secret = 's'\n",
            "servers.a.oauth",
            "'oauth' applies to URL servers",
        ),
        (
            "[servers.a]\ncommand = 'x'\ntransport = 'sse'\n",
            "servers.a.transport",
            "needs 'url', not 'command'",
        ),
        (
            "[servers.a]\ncommand = 'x'\ntransport = 'http'\n",
            "servers.a.transport",
            "needs 'url', not 'command'",
        ),
        (
            "[servers.a]\ncommand = 'x'\nhttp2 = false\n",
            "servers.a.http2",
            "'http2' applies to URL servers (https://), not command servers",
        ),
        ("[servers.a]\nurl = 'https://h/mcp'\nhttp2 = 'maybe'\n", "servers.a.http2", "valid boolean"),
        ("[servers.a]\ncommand = 'x'\ntransport = 'pipe'\n", "servers.a.transport", "should be 'stdio'"),
        ("[servers.a]\ncommand = ' '\n", "servers.a.command", "'command' is empty"),
        (
            "[servers.a]\nurl = 'http://h/mcp'\nargs = ['x']\n",
            "servers.a.args",
            "'args' applies to command servers, not URL servers",
        ),
        (
            "[servers.a]\nurl = 'http://h/mcp'\nenv = { A = '1' }\n",
            "servers.a.env",
            "'env' applies to command",
        ),
        ("[servers.a]\nurl = 'http://h/mcp'\ncwd = '/tmp'\n", "servers.a.cwd", "'cwd' applies to command"),
        (
            "[servers.a]\nurl = 'http://h/mcp'\ntransport = 'stdio'\n",
            "servers.a.transport",
            "transport 'stdio' needs 'command', not 'url'",
        ),
        ("[servers.a]\nurl = 'http://h/mcp'\ntransport = 'SSE'\n", "servers.a.transport", "'http' or 'sse'"),
        (
            "[servers.a]\nurl = 'http://h/sse'\ntransport = 'sse'\nargs = ['x']\n",
            "servers.a.args",
            "'args' applies to command servers",
        ),
        (
            "[servers.a]\nurl = 'http://h/sse'\ntransport = 'sse'\nenv = { A = '1' }\n",
            "servers.a.env",
            "'env' applies to command servers",
        ),
        (
            "[servers.a]\nurl = 'http://h/sse'\ntransport = 'sse'\ncolour = 1\n",
            "servers.a.colour",
            "unknown key",
        ),
        (
            "[servers.a]\nurl = 'ftp://h/sse'\ntransport = 'sse'\n",
            "servers.a.url",
            "not an http:// or https://",
        ),
        ("[servers]\na = 3\n", "servers.a", "must be a table with 'command' or 'url'"),
    ],
)
def test_key_of_another_kind_of_server_is_named(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_every_key_of_another_kind_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "[servers.a]\nurl = 'http://h/mcp'\nargs = ['x']\ncwd = '/tmp'\n")
    assert caught.value.key == "servers.a.args"
    assert "\n  servers.a.cwd: 'cwd' applies to command servers" in caught.value.reason


def test_empty_keys_of_another_kind_still_load(tmp_path: Path) -> None:
    registry = load_text(
        tmp_path,
        "[servers.a]\nurl = 'http://h/mcp'\nargs = []\nenv = {}\ncwd = ''\n"
        "[servers.b]\ncommand = 'x'\nheaders = {}\n",
    )
    assert isinstance(registry.servers["a"], config.HttpServer)
    assert isinstance(registry.servers["b"], config.StdioServer)


def test_each_kind_builds_what_its_transport_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARG", "from-process")
    secrets = {"TOKEN": "from-secrets"}
    registry = config.validate(
        {
            "servers": {
                "local": {
                    "command": "/bin/tool",
                    "args": ["${ARG}", "--key=${TOKEN}"],
                    "env": {"T": "${TOKEN}"},
                    "cwd": "/srv",
                },
                "remote": {"url": "https://h/${ARG}", "headers": {"Authorization": "Bearer ${TOKEN}"}},
                "old": {"url": "http://h/sse", "transport": "sse"},
            }
        },
        source="test",
    )
    local, remote, old = (registry.servers[name] for name in ("local", "remote", "old"))
    assert isinstance(local, config.StdioServer)
    # As the gateway passes it: the process environment first, then the secrets file.
    environ = ChainMap(dict(os.environ), secrets)
    params = local.to_params("local", environ=environ)
    assert (params.command, params.args, params.env, params.cwd) == (
        "/bin/tool",
        ["from-process", "--key=from-secrets"],
        {"T": "from-secrets"},
        "/srv",
    )
    assert isinstance(remote, config.HttpServer)
    assert remote.to_params("remote", environ=environ) == config.UrlParams(
        url="https://h/from-process", headers={"Authorization": "Bearer from-secrets"}
    )
    assert isinstance(old, config.SseServer)
    assert old.to_params("old") == config.UrlParams(url="http://h/sse", headers=None)
    with pytest.raises(ConfigError) as caught:
        remote.to_params("remote", environ={"ARG": "x"})
    assert caught.value.key == "servers.remote.headers.Authorization"


def test_a_url_may_start_with_a_variable_and_must_expand_to_http() -> None:
    server = config.server_config({"url": "${BASE}/mcp"}, key="servers.x")
    assert server.to_params("x", environ={"BASE": "https://h"}).url == "https://h/mcp"
    with pytest.raises(ConfigError) as caught:
        server.to_params("x", environ={"BASE": "ftp://h"})
    assert caught.value.key == "servers.x.url" and "expands to 'ftp://h/mcp'" in caught.value.reason
    with pytest.raises(ConfigError, match="is not an http:// or https:// URL"):
        config.server_config({"url": "ftp://${HOST}/mcp"}, key="servers.x")


def test_one_entry_validated_alone_names_its_key() -> None:
    server = config.server_config({"url": "http://h/sse", "transport": "sse"}, key="servers.x")
    assert isinstance(server, config.SseServer)
    assert server.entry() == {"url": "http://h/sse", "transport": "sse"}
    with pytest.raises(ConfigError) as caught:
        config.server_config({"url": "ftp://h"}, key="servers.x")
    assert caught.value.key == "servers.x.url" and "not an http:// or https:// URL" in caught.value.reason
    with pytest.raises(ConfigError) as caught:
        config.server_config({"args": ["x"]}, key="servers.x")
    assert caught.value.key == "servers.x" and "needs either 'command'" in caught.value.reason


def test_entry_writes_what_to_run_or_reach_first() -> None:
    server = config.StdioServer(command="npx", timeout=5, args=["-y", "x"], namespace="fs")
    assert list(server.entry()) == ["command", "args", "timeout", "namespace"]
