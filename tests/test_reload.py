"""Live reload of the registry under a serving gateway: file edits and SIGHUP, over stdio and HTTP.

Real `mcpgw serve` processes and real files, since the watcher, the editors' ways of writing and
the signal are the point. Every wait is a poll or an awaited notification under a hang guard.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import tomlkit
from mcp import Client, MCPError
from mcp.client.subscriptions import ResourceUpdated

from conftest import (
    INITIALIZE,
    SERVERS,
    StandIn,
    free_port,
    gateway_stdio,
    mcpgw_command,
    run_mcpgw,
    stop_group,
    wait_for_port,
    write_registry,
)
from mcpgw.config import parse
from mcpgw.core.reload import Parts, plan

pytestmark = pytest.mark.anyio

LIMIT = 90.0
"""Hang guard for a reload to reach a client: only a broken reload gets near it on a loaded machine."""
TINY_TOOLS = {"echo", "pid", "sleep", "peak", "big", "fail", "block"}


def tiny(*, sleeps: Path | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "command": sys.executable,
        "args": [str(SERVERS / "tiny.py")],
        "era": "handshake",
    }
    if sleeps is not None:
        entry["env"] = {"TINY_SLEEP_LOG": str(sleeps)}
    return entry


def tools_of(*servers: str) -> set[str]:
    return {f"{server}__{tool}" for server in servers for tool in TINY_TOOLS}


def replace_atomically(path: Path, servers: dict[str, dict[str, Any]], **gateway: Any) -> None:
    """As most editors save: a temporary file in the same directory, renamed over the registry."""
    tmp = write_registry(path.with_name(".servers.toml.tmp"), servers, **gateway)
    os.replace(tmp, path)


async def names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def pid_of(client: Client, server: str) -> int:
    result = await client.call_tool(f"{server}__pid", {})
    return int(result.structured_content["result"])  # type: ignore[index]


async def text_of(client: Client, name: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, result
    return str(result.content[0].text)  # type: ignore[union-attr]


class ListChanges:
    """A message handler that counts `notifications/tools/list_changed` (handshake-era clients)."""

    def __init__(self) -> None:
        self.count = 0
        self._event = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self.count += 1
            self._event.set()

    async def next(self) -> None:
        with anyio.fail_after(LIMIT):
            await self._event.wait()
        self._event = anyio.Event()


async def poll(predicate: Any, what: str) -> Any:
    with anyio.fail_after(LIMIT):
        while True:
            value = await predicate()
            if value:
                return value
            await anyio.sleep(0.05)


# --- HTTP gateway processes ------------------------------------------------------------------------


class HttpGateway:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Any) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.health_url = f"http://127.0.0.1:{port}/healthz"
        self._log = log

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            body: dict[str, Any] = (await http.get(self.health_url)).json()
            return body

    def log(self) -> str:
        self._log.seek(0)
        return str(self._log.read().decode())


@contextmanager
def http_gateway(config: Path, env: dict[str, str] | None = None) -> Iterator[HttpGateway]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            mcpgw_command("serve", "-t", "http", "--port", str(port), "--config", str(config)),
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        try:
            wait_for_port(port, process=process)
            yield HttpGateway(process, port, log)
        finally:
            stop_group(process)


@asynccontextmanager
async def http_client(gateway: HttpGateway, **kwargs: Any) -> AsyncIterator[Client]:
    async with Client(gateway.url, **kwargs) as client:
        yield client


# --- adding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["in place", "vim"])
async def test_a_server_added_to_the_file_reaches_a_connected_stdio_client(tmp_path: Path, how: str) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    changes = ListChanges()
    async with gateway_stdio(config, mode="legacy", message_handler=changes) as client:
        assert await names(client) == tools_of("a")
        a_pid = await pid_of(client, "a")

        if how == "vim":  # vim's backup dance: the file renamed away, then written anew
            os.replace(config, config.with_name("servers.toml~"))
        write_registry(config, {"a": tiny(), "b": tiny()})  # as `>`, an IDE or vim write it
        await changes.next()

        assert await names(client) == tools_of("a", "b")
        assert await text_of(client, "b__echo", {"message": "new"}) == "new"
        # The same session carries on, and the server that did not change was not touched.
        assert await text_of(client, "a__echo", {"message": "old"}) == "old"
        assert await pid_of(client, "a") == a_pid


async def test_a_server_added_reaches_http_clients_of_both_eras(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    changes = ListChanges()
    with http_gateway(config) as gateway:
        async with (
            http_client(gateway, mode="legacy", message_handler=changes) as legacy,
            http_client(gateway) as modern,
        ):
            assert modern.protocol_version == "2026-07-28"
            assert await names(legacy) == await names(modern) == tools_of("a")
            async with modern.listen(tools_list_changed=True) as events:
                replace_atomically(config, {"a": tiny(), "b": tiny()})
                with anyio.fail_after(LIMIT):
                    async for _event in events:
                        break
            await changes.next()

            assert await names(modern) == await names(legacy) == tools_of("a", "b")
            assert await text_of(modern, "b__echo", {"message": "m"}) == "m"
            assert await text_of(legacy, "b__echo", {"message": "l"}) == "l"
        health = await gateway.health()
        assert health["status"] == "ok"
        assert health["config"]["status"] == "loaded" and health["config"]["reloads"] == 1
        assert "reloaded: added b" in gateway.log()


async def test_personas_and_data_rules_apply_to_the_next_request_of_the_same_session(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    changes = ListChanges()
    async with gateway_stdio(config, mode="legacy", message_handler=changes) as client:
        assert await names(client) == tools_of("a")
        assert await text_of(client, "a__echo", {"message": "bob@example.com"}) == "bob@example.com"
        a_pid = await pid_of(client, "a")

        rules = """
[personas.default]
allow = ["a__echo", "a__pid"]

[[security.rules]]
detectors = ["email"]
directions = ["results"]
action = "redact"
"""
        config.write_text(config.read_text() + rules)
        await changes.next()

        assert await names(client) == {"a__echo", "a__pid"}
        assert await text_of(client, "a__echo", {"message": "bob@example.com"}) == "[REDACTED:email]"
        with pytest.raises(MCPError, match="Unknown tool: a__sleep"):
            await client.call_tool("a__sleep", {"seconds": 0})
        assert await pid_of(client, "a") == a_pid  # settings only: the upstream was not restarted


async def test_a_sampling_route_changed_by_a_reload_answers_the_next_call(
    tmp_path: Path, llm: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPGW_TEST_LLM_KEY", "sk-test")
    modern = {"command": sys.executable, "args": [str(SERVERS / "modern.py")]}

    def registry(model: str) -> str:
        route = {"model": f"openai/{model}", "api_base": llm.base, "api_key_env": "MCPGW_TEST_LLM_KEY"}
        return tomlkit.dumps({"servers": {"modern": modern}, "sampling": {"routes": {"main": route}}})

    config = tmp_path / "servers.toml"
    config.write_text(registry("good"))
    async with gateway_stdio(config, mode="legacy") as client:
        first = await text_of(client, "modern__summarize", {"text": "one"})
        assert first == "stand-in answer from good: one"
        config.write_text(registry("better"))

        async def answered_by_the_new_route() -> bool:
            return (
                await text_of(client, "modern__summarize", {"text": "two"})
                == "stand-in answer from better: two"
            )

        await poll(answered_by_the_new_route, "the new route")


async def test_mcpgw_add_server_on_the_running_registry_reaches_a_connected_client(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    async with gateway_stdio(config) as client:
        assert client.protocol_version == "2026-07-28"
        assert await names(client) == tools_of("a")
        async with client.listen(tools_list_changed=True) as events:
            added = await anyio.to_thread.run_sync(
                run_mcpgw,
                "add-server",
                "--config",
                str(config),
                "b",
                sys.executable,
                str(SERVERS / "tiny.py"),
            )
            assert added.returncode == 0, added.stderr
            with anyio.fail_after(LIMIT):
                async for _event in events:
                    break
        assert await names(client) == tools_of("a", "b")
        assert await text_of(client, "b__echo", {"message": "hi"}) == "hi"


# --- removing --------------------------------------------------------------------------------------


async def test_removing_a_server_mid_traffic_leaves_the_others_alone(tmp_path: Path) -> None:
    sleeps = tmp_path / "b-sleeps"
    config = write_registry(
        tmp_path / "servers.toml", {"a": tiny(), "b": tiny(sleeps=sleeps)}, drain_grace=60
    )
    changes = ListChanges()
    async with gateway_stdio(config, mode="legacy", message_handler=changes) as client:
        assert await names(client) == tools_of("a", "b")
        a_pid = await pid_of(client, "a")
        finished: dict[str, str] = {}
        echoes: list[str] = []

        async def sleep_on_b() -> None:
            finished["b"] = await text_of(client, "b__sleep", {"seconds": 3})

        async def traffic_on_a() -> None:
            while "b" not in finished:
                echoes.append(await text_of(client, "a__echo", {"message": str(len(echoes))}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleep_on_b)
            await poll(lambda: _async(sleeps.exists()), "b's sleep in flight")
            tg.start_soon(traffic_on_a)
            write_registry(config, {"a": tiny()}, drain_grace=60)
            await changes.next()
            assert await names(client) == tools_of("a")

        assert finished["b"] == "slept 3.0"  # in flight on the removed server: let finish
        assert echoes == [str(i) for i in range(len(echoes))] and echoes  # every call to `a` answered
        assert await pid_of(client, "a") == a_pid
        with pytest.raises(MCPError, match="Unknown tool: b__echo"):
            await client.call_tool("b__echo", {"message": "gone"})


@pytest.mark.parametrize("edit", ["removed from the registry", "changed"])
async def test_a_call_outlasting_the_drain_fails_naming_the_reload(tmp_path: Path, edit: str) -> None:
    sleeps = tmp_path / "b-sleeps"
    config = write_registry(
        tmp_path / "servers.toml", {"a": tiny(), "b": tiny(sleeps=sleeps)}, drain_grace=0.2
    )
    async with gateway_stdio(config) as client:
        failed: dict[str, str] = {}

        async def sleep_on_b() -> None:
            with pytest.raises(MCPError) as raised:
                await client.call_tool("b__sleep", {"seconds": 600})
            failed["b"] = str(raised.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleep_on_b)
            await poll(lambda: _async(sleeps.exists()), "b's sleep in flight")
            servers = {"a": tiny()}
            if edit == "changed":
                servers["b"] = {**tiny(sleeps=sleeps), "restart": False}
            write_registry(config, servers, drain_grace=0.2)
        assert failed["b"] == f"upstream 'b': {edit} by a registry reload"
        assert await text_of(client, "a__echo", {"message": "still here"}) == "still here"
        if edit == "changed":  # its replacement serves
            assert await text_of(client, "b__echo", {"message": "new b"}) == "new b"


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
async def test_resource_subscriptions_follow_a_changed_server(tmp_path: Path, era: str) -> None:
    """A restarted server is subscribed again; the client's listen stream hears of changes as before."""
    entry = {"command": sys.executable, "args": [str(SERVERS / "watched.py"), "--protocol", era]}
    config = write_registry(tmp_path / "servers.toml", {"w": entry})
    uri = "mcpgw://w/test://watched"
    async with (
        gateway_stdio(config, mode="2026-07-28") as client,
        client.listen(resource_subscriptions=[uri]) as subscription,
    ):

        async def watchers() -> Any:
            return json.loads(await text_of(client, "w__watchers", {}))

        await poll(lambda: _async_eq(watchers(), ["test://watched"]), "the upstream subscription")
        first = await text_of(client, "w__pid", {})
        write_registry(config, {"w": {**entry, "env": {"RELOADED": "1"}}})  # changed: restarted

        async def restarted() -> bool:
            with contextlib.suppress(MCPError):
                return await text_of(client, "w__pid", {}) != first
            return False

        await poll(restarted, "the new process")
        await poll(lambda: _async_eq(watchers(), ["test://watched"]), "the new upstream subscription")
        await text_of(client, "w__touch", {"uri": "test://watched"})
        with anyio.fail_after(LIMIT):
            async for event in subscription:
                if isinstance(event, ResourceUpdated):
                    assert event.uri == uri
                    break


async def _async_eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_shorter_timeout_applies_to_new_calls_without_a_restart(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": {**tiny(), "timeout": 600}})
    async with gateway_stdio(config) as client:
        a_pid = await pid_of(client, "a")
        write_registry(config, {"a": {**tiny(), "timeout": 0.5}})

        async def timed_out() -> str | None:
            try:
                await client.call_tool("a__sleep", {"seconds": 2})  # still under the old timeout
            except MCPError as exc:
                return exc.error.message
            return None

        assert await poll(timed_out, "the new timeout") == "upstream 'a': tools/call timed out after 0.5s"
        assert await pid_of(client, "a") == a_pid


async def test_a_changed_secret_restarts_only_the_server_that_names_it(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("TOKEN=one\n")
    secrets.chmod(0o600)
    servers = {"a": {**tiny(), "env": {"T": "${TOKEN}"}}, "b": tiny()}
    config = write_registry(tmp_path / "servers.toml", servers, secrets_file=str(secrets))
    async with gateway_stdio(config) as client:
        a_pid, b_pid = await pid_of(client, "a"), await pid_of(client, "b")
        replacement = tmp_path / "secrets.env.new"
        replacement.write_text("TOKEN=two\n")
        replacement.chmod(0o600)
        os.replace(replacement, secrets)

        async def a_restarted() -> bool:
            with contextlib.suppress(MCPError):
                return await pid_of(client, "a") != a_pid
            return False

        await poll(a_restarted, "a restarted with the new secret")
        assert await pid_of(client, "b") == b_pid


# --- refusing --------------------------------------------------------------------------------------


async def test_a_broken_edit_changes_nothing_and_healthz_and_the_log_say_why(
    tmp_path: Path, audit_db: Path
) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    with http_gateway(config) as gateway:
        async with http_client(gateway) as client:
            assert await names(client) == tools_of("a")
            a_pid = await pid_of(client, "a")
            good = config.read_text()
            config.write_text(good.replace('era = "handshake"', 'era = "handshake"\nbogus = 1'))

            async def refused() -> Any:
                return (await gateway.health())["config"]["refused"]

            assert await poll(refused, "the refusal") == {
                "file": str(config),
                "key": "servers.a.bogus",
                "reason": "unknown key",
            }
            health = await gateway.health()
            assert health["config"]["status"] == "refused" and health["status"] == "ok"
            assert "registry reload refused; the running configuration stays" in gateway.log()
            assert "servers.a.bogus: unknown key" in gateway.log()
            assert await names(client) == tools_of("a")  # nothing changed
            assert await pid_of(client, "a") == a_pid

            config.write_text("")  # as an in-place writer leaves it for a moment

            async def refused_empty() -> bool:
                return await _reason_has(gateway, "the file is empty")

            await poll(refused_empty, "the empty file refused")
            assert await names(client) == tools_of("a")

            # A persona naming a server that is not there: refused as a whole, the new server too.
            broken = good + '\n[servers.b]\ncommand = "x"\n\n[personas.ops]\nservers = ["nope"]\n'
            config.write_text(broken)
            await poll(lambda: _reason_has(gateway, "persona 'ops' names server 'nope'"), "the refusal")
            assert "b" not in (await gateway.health())["upstreams"]

            # Fixed: it loads, and the refusal is gone.
            write_registry(config, {"a": tiny(), "b": tiny()})

            async def loaded() -> bool:
                health = await gateway.health()
                return health["config"]["refused"] is None and "b" in health["upstreams"]

            await poll(loaded, "the fixed file")
            assert await names(client) == tools_of("a", "b")

    # The audit log has a row per configuration: the start, each refusal, the reload.
    async def config_rows() -> list[tuple[str, str | None, str | None]] | None:
        with contextlib.closing(sqlite3.connect(audit_db)) as db:
            rows = db.execute("select outcome, error, result from events where kind = 'config' order by ts")
            found = [(str(o), e, r) for o, e, r in rows.fetchall()]
        return found if found and found[-1][2] is not None else None

    rows = await poll(config_rows, "the config rows")
    assert rows[0][0] == "ok" and rows[-1][0] == "ok"
    assert json.loads(str(rows[-1][2])) == {"added": ["b"]}
    errors = [str(error) for outcome, error, _ in rows if outcome == "error"]
    assert f"{config}: servers.a.bogus: unknown key" in errors
    assert any("the file is empty" in error for error in errors)
    assert any("persona 'ops' names server 'nope'" in error for error in errors)


async def test_a_persona_override_the_new_catalog_cannot_satisfy_is_refused_whole(tmp_path: Path) -> None:
    """Checked once the new servers have started: the whole edit is refused, the new server stopped."""
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    with http_gateway(config) as gateway:
        async with http_client(gateway) as client:
            assert await names(client) == tools_of("a")
            edited = write_registry(tmp_path / "edited.toml", {"a": tiny(), "b": tiny()})
            persona = '\n[personas.ops]\nservers = ["b"]\n[personas.ops.tools.b__nope]\ndescription = "x"\n'
            config.write_text(edited.read_text() + persona)  # one write: one reload

            async def refused() -> Any:
                return (await gateway.health())["config"]["refused"]

            refusal = await poll(refused, "the refusal")
            assert refusal["key"] == "personas.ops.tools.b__nope"
            assert "does not exist in the catalog" in refusal["reason"]
            assert set((await gateway.health())["upstreams"]) == {"a"}
            assert await names(client) == tools_of("a")


@pytest.mark.long
async def test_a_server_added_under_production_pins_stays_withheld_until_pinned(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()}, mode="production")
    pinned = run_mcpgw("pin", "--config", str(config))
    assert pinned.returncode == 0, pinned.stderr
    with http_gateway(config) as gateway:
        async with http_client(gateway) as client:
            assert await names(client) == tools_of("a")
            write_registry(config, {"a": tiny(), "b": tiny()}, mode="production")

            async def b_ready() -> bool:
                return (await gateway.health())["upstreams"].get("b", {}).get("state") == "ready"

            await poll(b_ready, "b started")
            assert await names(client) == tools_of("a")  # started, but not pinned: withheld
            with pytest.raises(MCPError, match="Unknown tool: b__echo"):
                await client.call_tool("b__echo", {"message": "x"})

            approved = await anyio.to_thread.run_sync(
                run_mcpgw, "pin", "--config", str(config), "--approve", "b"
            )
            assert approved.returncode == 0, approved.stderr

            async def b_listed() -> bool:
                return await names(client) == tools_of("a", "b")

            await poll(b_listed, "b pinned")
            assert await text_of(client, "b__echo", {"message": "pinned"}) == "pinned"


async def _reason_has(gateway: HttpGateway, text: str) -> bool:
    refused = (await gateway.health())["config"]["refused"]
    return refused is not None and text in refused["reason"]


async def _async(value: Any) -> Any:
    return value


async def test_auth_added_and_removed_by_a_reload_applies_to_the_next_request(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    plain = config.read_text()
    with http_gateway(config) as gateway:
        base = gateway.url.removesuffix("/mcp")
        metadata = f"{base}/.well-known/oauth-protected-resource/mcp"
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=30) as http:

            async def initialize() -> int:
                return (await http.post(gateway.url, json=INITIALIZE, headers=headers)).status_code

            assert await initialize() == 200
            assert (await http.get(metadata)).status_code == 404
            issuer = "https://issuer.example"
            config.write_text(
                plain + f'\n[auth]\nissuer = "{issuer}"\njwks_url = "{issuer}/jwks"\npublic_url = "{base}"\n'
            )

            async def refused_without_a_token() -> bool:
                return await initialize() == 401

            await poll(refused_without_a_token, "[auth] in force")
            described = (await http.get(metadata)).json()
            assert described["authorization_servers"] == [issuer]
            assert (await gateway.health())["config"]["restart_needed"] == []

            config.write_text(plain)

            async def open_again() -> bool:
                return await initialize() == 200

            await poll(open_again, "[auth] gone")
            assert (await http.get(metadata)).status_code == 404


async def test_a_setting_read_only_at_start_is_reported_until_it_is_back(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    with http_gateway(config) as gateway:

        async def waiting() -> list[str]:
            return list((await gateway.health())["config"]["restart_needed"])

        write_registry(config, {"a": tiny()}, max_sessions=10)
        assert await poll(waiting, "the restart-only key") == ["gateway.max_sessions"]
        assert "gateway.max_sessions changed; kept as started until mcpgw restarts" in gateway.log()

        write_registry(config, {"a": tiny(), "b": tiny()})  # back as started, and a server more

        async def back() -> bool:
            health = await gateway.health()
            return "b" in health["upstreams"] and health["config"]["restart_needed"] == []

        await poll(back, "the key back as started")


# --- SIGHUP ----------------------------------------------------------------------------------------


async def test_sighup_reloads_instead_of_stopping(tmp_path: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    # Polling once an hour: only SIGHUP can make this gateway notice the edit within the test.
    quiet = {
        "WATCHFILES_FORCE_POLLING": "1",
        "WATCHFILES_POLL_DELAY_MS": "3600000",
        "MCPGW_RELOAD_RECHECK_SECONDS": "3600",
    }
    with http_gateway(config, env=quiet) as gateway:
        async with http_client(gateway) as client:
            assert await names(client) == tools_of("a")
            write_registry(config, {"a": tiny(), "b": tiny()})
            gateway.process.send_signal(signal.SIGHUP)

            async def b_ready() -> bool:
                upstreams = (await gateway.health())["upstreams"]
                return upstreams.get("b", {}).get("state") == "ready"

            await poll(b_ready, "b started by SIGHUP")
            assert await names(client) == tools_of("a", "b")
            assert gateway.process.poll() is None
        assert "received SIGHUP; reloading the registry" in gateway.log()


async def test_an_edit_the_watcher_never_reports_is_still_taken(tmp_path: Path) -> None:
    """The files' content is compared every few seconds besides the watcher: an edit saved before the
    watcher was set up (a gateway binds its port first), or on a mount that reports nothing, is taken."""
    config = write_registry(tmp_path / "servers.toml", {"a": tiny()})
    blind = {"WATCHFILES_FORCE_POLLING": "1", "WATCHFILES_POLL_DELAY_MS": "3600000"}
    with http_gateway(config, env=blind) as gateway:
        async with http_client(gateway) as client:
            assert await names(client) == tools_of("a")  # serving: past any check made at start
        write_registry(config, {"a": tiny(), "b": tiny()})

        async def b_ready() -> bool:
            upstreams = (await gateway.health())["upstreams"]
            return upstreams.get("b", {}).get("state") == "ready"

        await poll(b_ready, "b started without the watcher")
        assert "received SIGHUP" not in gateway.log()


# --- what a reload restarts (the plan) -------------------------------------------------------------


def _parts(text: str, secrets: dict[str, str] | None = None) -> Parts:
    return Parts(parse(text, source="test"), secrets=secrets or {})


BASE = """
[servers.a]
command = "a"
[servers.b]
command = "b"
env = { TOKEN = "${API_TOKEN}" }
"""


@pytest.mark.parametrize(
    ("after", "secrets", "expected"),
    [
        (BASE, None, {}),
        (BASE.replace('command = "a"', 'command = "a2"'), None, {"restarted": ("a",)}),
        (BASE + "[servers.c]\ncommand = 'c'\n", None, {"added": ("c",)}),
        (BASE.replace('command = "a"', 'command = "a"\nenabled = false'), None, {"removed": ("a",)}),
        (BASE, {"API_TOKEN": "new"}, {"restarted": ("b",)}),
        (BASE + "[personas.ops]\nservers = ['a']\n", None, {"other": True}),
        ("[gateway]\nport = 9000\n" + BASE, None, {"restart_needed": ("gateway.port",)}),
        ("[gateway]\ntimeout = 5\n" + BASE, None, {"retuned": ("a", "b")}),
        ("[gateway]\nmax_concurrent = 5\n" + BASE, None, {"restarted": ("a", "b")}),
        (
            BASE.replace('command = "a"', 'command = "a"\ntool_timeouts = { x = 1 }'),
            None,
            {"retuned": ("a",)},
        ),
    ],
    ids=["same", "changed", "added", "disabled", "secret", "persona", "port", "timeout", "slots", "tool"],
)
def test_a_reload_restarts_only_what_changed(
    after: str, secrets: dict[str, str] | None, expected: dict[str, Any]
) -> None:
    done = plan(_parts(BASE, {"API_TOKEN": "old"}), _parts(after, {"API_TOKEN": "old", **(secrets or {})}))
    assert done.added == expected.get("added", ())
    assert done.removed == expected.get("removed", ())
    assert done.restarted == expected.get("restarted", ())
    assert done.retuned == expected.get("retuned", ())
    assert done.restart_needed == expected.get("restart_needed", ())
    assert done.other == (after != BASE or secrets is not None)
    if not expected:
        assert done.empty and done.describe() == "nothing changed"
