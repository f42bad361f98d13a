"""Process life: children gone however the gateway exits, stderr kept off stdout, broken upstreams tolerated.

These drive `mcpgw serve` over raw stdio pipes, so every byte it writes to
stdout is checked to be JSON-RPC.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import SERVERS, TLS, gateway_stdio, lite_server, mcpgw_command, stop_group

TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
"""An upstream with `echo` and `pid`, standard library only: it starts in milliseconds where a FastMCP
upstream takes a CPU second, and these tests are about processes, not what the upstream serves."""

STARTUP_LIMIT = 120.0
"""Seconds an upstream may take to start in these tests: far above a loaded machine's worst."""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class RawGateway:
    """`mcpgw serve` over pipes, speaking JSON-RPC lines (2025-11-25 handshake)."""

    def __init__(self, config: Path, *extra: str) -> None:
        # stderr goes to a file: a pipe nobody reads could fill and block the gateway's logging
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            mcpgw_command("serve", "--config", str(config), *extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self._id = 0
        self.stash: dict[Any, dict[str, Any]] = {}

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        self.send({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or {}})
        return self.reply(self._id)

    def reply(self, request_id: Any) -> dict[str, Any]:
        """The reply to `request_id`; replies to other requests that arrive first are kept for later."""
        assert self.process.stdout is not None
        while request_id not in self.stash:
            line = self.process.stdout.readline()
            assert line, "the gateway closed stdout"
            message = json.loads(line)  # every stdout line must be JSON-RPC
            assert message["jsonrpc"] == "2.0"
            if "id" in message:
                self.stash[message["id"]] = message
        return self.stash.pop(request_id)

    def initialize(self) -> None:
        reply = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        assert reply["result"]["serverInfo"]["name"] == "mcpgw"
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments or {}})

    def start_call(self, request_id: str, name: str, arguments: dict[str, Any]) -> None:
        """Send a call without waiting for it; `reply(request_id)` collects its answer later."""
        params = {"name": name, "arguments": arguments}
        self.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})

    def upstream_pid(self, name: str) -> int:
        reply = self.call(f"{name}__pid")
        return int(reply["result"]["structuredContent"]["result"])

    def close(self) -> None:
        stop_group(self.process)
        assert self.process.stdout is not None
        self.process.stdout.close()
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode()


@pytest.fixture
def two_upstreams(registry_file: Any) -> Path:
    path: Path = registry_file({"a": TINY, "b": TINY})
    return path


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stdin closed"])
def test_children_are_gone_however_the_gateway_exits(two_upstreams: Path, how: str) -> None:
    gateway = RawGateway(two_upstreams)
    try:
        gateway.initialize()
        pids = [gateway.upstream_pid("a"), gateway.upstream_pid("b")]
        assert all(alive(pid) for pid in pids)
        if how == "stdin closed":
            assert gateway.process.stdin is not None
            gateway.process.stdin.close()
        else:
            gateway.process.send_signal(getattr(signal, how))
        assert gateway.process.wait(15) == 0, gateway.log()
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 5), f"left behind: {pids}"
    finally:
        gateway.close()


def test_grandchildren_of_an_upstream_are_gone_too(registry_file: Any, tmp_path: Path) -> None:
    script = tmp_path / "spawner.py"
    pidfile = tmp_path / "grandchild.pid"
    script.write_text(
        "import subprocess, sys\n"
        f"p = subprocess.Popen(['sleep', '300'])\nopen({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        f"sys.argv = ['upstream.py']\nsys.path.insert(0, {str(SERVERS)!r})\n"
        "from upstream import build\nbuild('spawner').run(transport='stdio', show_banner=False)\n"
    )
    config = registry_file({"s": {"command": sys.executable, "args": [str(script)]}})
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        assert gateway.call("s__echo", {"message": "x"})["result"]["content"][0]["text"] == "x"
        grandchild = int(pidfile.read_text())
        assert alive(grandchild)
        gateway.process.send_signal(signal.SIGTERM)
        gateway.process.wait(15)
        assert wait_until(lambda: not alive(grandchild), 5)
    finally:
        gateway.close()


def test_upstream_stderr_goes_to_the_log_never_to_stdout(registry_file: Any) -> None:
    config = registry_file({"noisy": {"command": sys.executable, "args": [str(SERVERS / "bad.py"), "noisy"]}})
    gateway = RawGateway(config, "--log-level", "info")
    try:
        gateway.initialize()  # reads stdout line by line and parses each as JSON-RPC
        assert gateway.call("noisy__echo", {"message": "ok"})["result"]["content"][0]["text"] == "ok"
    finally:
        gateway.close()
    log = gateway.log()
    assert "STDERR-MARKER from the noisy upstream" in log
    assert "mcpgw.upstream.noisy" in log


def test_broken_upstreams_do_not_stop_the_rest(registry_file: Any, tmp_path: Path) -> None:
    bad = str(SERVERS / "bad.py")
    config = registry_file(
        {
            "good": TINY,
            "exits": {"command": sys.executable, "args": [bad, "exit"]},
            "garbage": {"command": sys.executable, "args": [bad, "garbage"]},
            "missing": {"command": str(tmp_path / "no-such-binary")},
            "nohost": {"url": "http://127.0.0.1:9/mcp"},
            "unset": {**lite_server(), "env": {"TOKEN": "${MCPGW_TEST_UNSET_VARIABLE}"}},
        },
        # Generous: the good upstreams must start within it however loaded the machine is. A broken
        # one fails at once, so none of them holds the catalog up to this limit.
        startup_timeout=STARTUP_LIMIT,
    )
    gateway = RawGateway(config)
    started = time.monotonic()
    try:
        gateway.initialize()
        tools = [t["name"] for t in gateway.request("tools/list")["result"]["tools"]]
        assert time.monotonic() - started < STARTUP_LIMIT  # no broken upstream waited out the limit
        assert "good__echo" in tools
        # a server that prints garbage before its first message still serves
        assert "garbage__echo" in tools
        assert not [t for t in tools if t.split("__")[0] in ("exits", "missing", "nohost", "unset")]
        assert gateway.call("good__echo", {"message": "fine"})["result"]["content"][0]["text"] == "fine"
        # a server that never started: its namespace names it, so the error says it is down, not unknown
        # (failed, or already on its next attempt: the supervisor restarts it with backoff)
        error = gateway.call("exits__echo", {"message": "x"})["error"]
        assert re.search(r"upstream 'exits': down \((failed|restarting)", error["message"]), error
    finally:
        gateway.close()
    log = gateway.log()
    assert "upstream exits failed to start" in log
    assert "no-such-binary" in log
    assert "environment variable MCPGW_TEST_UNSET_VARIABLE is not set" in log


def test_a_silent_upstream_fails_at_the_startup_timeout(registry_file: Any) -> None:
    """A server that never answers fails at the limit. Alone, so the limit can be short: no good
    upstream is there to miss it on a loaded machine, and the silent one misses any limit."""
    config = registry_file(
        {"silent": {"command": sys.executable, "args": [str(SERVERS / "bad.py"), "silent"]}},
        startup_timeout=2,
    )
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        tools = [t["name"] for t in gateway.request("tools/list")["result"]["tools"]]
        assert not [t for t in tools if t.startswith("silent__")]
    finally:
        gateway.close()
    assert "upstream silent failed to start: did not start within 2s" in gateway.log()


def test_an_upstream_that_dies_fails_fast_then_comes_back(two_upstreams: Path) -> None:
    gateway = RawGateway(two_upstreams)
    try:
        gateway.initialize()
        pid = gateway.upstream_pid("a")
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(pid), 30)
        started = time.monotonic()
        reply = gateway.call("a__echo", {"message": "x"})
        assert time.monotonic() - started < 30  # fast: never the call timeout (60 s by default)
        if "error" in reply:  # fails fast and names the server: its tools stay listed while it is down
            assert reply["error"]["message"].startswith("upstream 'a': "), reply
        # the other upstream is untouched
        assert gateway.call("b__echo", {"message": "y"})["result"]["content"][0]["text"] == "y"

        def restarted() -> bool:
            reply = gateway.call("a__pid")
            return "result" in reply and reply["result"]["structuredContent"]["result"] != pid

        assert wait_until(restarted, 60), "the upstream was not restarted"
        assert not alive(pid)
    finally:
        gateway.close()
    assert "restarting in" in gateway.log()


def test_malformed_requests_get_jsonrpc_errors(two_upstreams: Path) -> None:
    gateway = RawGateway(two_upstreams)
    try:
        gateway.initialize()
        reply = gateway.request("tools/call", {"name": "a__echo", "arguments": "not-an-object"})
        assert reply["error"]["code"] == -32602
        reply = gateway.request("tools/call", {"arguments": {}})
        assert reply["error"]["code"] == -32602
        reply = gateway.request("no/such/method")
        assert reply["error"]["code"] == -32601
        assert gateway.call("a__echo", {"message": "still"})["result"]["content"][0]["text"] == "still"
    finally:
        gateway.close()


def test_a_call_to_a_server_still_starting_waits_for_it(registry_file: Any) -> None:
    slow = f"sleep 2; exec {sys.executable} {SERVERS / 'tiny.py'}"
    config = registry_file({"up": TINY, "slow": {"command": "/bin/sh", "args": ["-c", slow]}})
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        # no tools/list first: a client that remembers names from an earlier session calls at once
        assert gateway.call("up__echo", {"message": "a"})["result"]["content"][0]["text"] == "a"
        assert gateway.call("slow__echo", {"message": "b"})["result"]["content"][0]["text"] == "b"
    finally:
        gateway.close()


def test_health_endpoint_reports_each_upstream(registry_file: Any, tmp_path: Path) -> None:
    import httpx

    from conftest import background, free_port

    config = registry_file({"good": TINY, "bad": {"command": str(tmp_path / "missing")}})
    port = free_port()
    with background(
        mcpgw_command("serve", "-t", "http", "--port", str(port), "--config", str(config)), port=port
    ):
        assert wait_until(
            lambda: (
                httpx.get(f"http://127.0.0.1:{port}/healthz", verify=TLS).json()["upstreams"]["good"]["state"]
                == "ready"
            ),
            15,
        )
        response = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded"
        assert (
            body["upstreams"]["bad"]["state"] in ("failed", "restarting")
            and "missing" in body["upstreams"]["bad"]["error"]
        )
    healthy = registry_file({"good": TINY})
    with background(
        mcpgw_command("serve", "-t", "http", "--port", str(port), "--config", str(healthy)), port=port
    ):
        assert wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", verify=TLS).status_code == 200, 15
        )


def lingering(tmp_path: Path) -> dict[str, Any]:
    """tiny.py kept alive after its stdin closes, with a grandchild in its group (as under npx or a
    shell wrapper); the grandchild's pid is written to `grandchild.pid`."""
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 600 & echo $! > {pidfile}; exec {sys.executable} {SERVERS / 'tiny.py'} --linger"
    return {"command": "/bin/sh", "args": ["-c", script]}


HANG_GUARD = 120.0


def reap(pids: list[int]) -> None:
    """Kill what a failed test left behind."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_closing_stdin_stops_an_upstream_that_ignores_it_within_the_clients_grace(
    registry_file: Any, tmp_path: Path
) -> None:
    """Run as the mcp SDK's stdio client runs a server: it closes stdin, waits its grace, then
    SIGTERMs the gateway's group. The gateway must be gone by itself by then, children and all."""
    from mcp.client.stdio import PROCESS_TERMINATION_TIMEOUT

    gateway = RawGateway(registry_file({"a": lingering(tmp_path)}))
    pids: list[int] = []
    try:
        gateway.initialize()
        pids += [gateway.upstream_pid("a"), int((tmp_path / "grandchild.pid").read_text())]
        assert gateway.process.stdin is not None
        gateway.process.stdin.close()
        terminated = False
        try:
            gateway.process.wait(PROCESS_TERMINATION_TIMEOUT)
        except subprocess.TimeoutExpired:
            terminated = True  # what the SDK does next
            os.killpg(gateway.process.pid, signal.SIGTERM)
            gateway.process.wait(HANG_GUARD)
        assert not terminated, f"the gateway outlived the client's {PROCESS_TERMINATION_TIMEOUT}s grace"
        assert gateway.process.returncode == 0, gateway.log()
        assert wait_until(lambda: not any(alive(pid) for pid in pids), HANG_GUARD), f"left behind: {pids}"
    finally:
        gateway.close()
        reap(pids)


def test_a_gateway_killed_with_sigkill_leaves_no_upstream_behind(registry_file: Any, tmp_path: Path) -> None:
    gateway = RawGateway(registry_file({"a": lingering(tmp_path), "b": lite_server("--name", "B")}))
    pids: list[int] = []
    try:
        gateway.initialize()
        pids += [
            gateway.upstream_pid("a"),
            int((tmp_path / "grandchild.pid").read_text()),
            gateway.upstream_pid("b"),
        ]
        gateway.process.kill()
        gateway.process.wait(HANG_GUARD)
        assert wait_until(lambda: not any(alive(pid) for pid in pids), HANG_GUARD), (
            f"left behind: {[pid for pid in pids if alive(pid)]}"
        )
    finally:
        gateway.close()
        reap(pids)


@pytest.mark.anyio
async def test_the_sdk_stdio_client_closing_leaves_no_upstream_behind(
    registry_file: Any, tmp_path: Path
) -> None:
    """The real mcp SDK client, in its own shutdown: stdin closed, its grace, then SIGTERM to the group."""
    pids: list[int] = []
    try:
        async with gateway_stdio(registry_file({"a": lingering(tmp_path)})) as client:
            result = await client.call_tool("a__pid", {})
            assert result.structured_content is not None
            pids += [int(result.structured_content["result"]), int((tmp_path / "grandchild.pid").read_text())]
        assert wait_until(lambda: not any(alive(pid) for pid in pids), HANG_GUARD), (
            f"left behind: {[pid for pid in pids if alive(pid)]}"
        )
    finally:
        reap(pids)
