"""Faults and limits against real upstream processes: kill loops, drains, timeouts, queues, sizes, reconnects.

Most of these use `servers/tiny.py`, a standard-library MCP server that starts
in milliseconds, so a hundred restarts measure the gateway's supervision
rather than Python imports.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlite_utils
from mcp.shared.exceptions import MCPError

from conftest import SERVERS, TLS, UPSTREAM, background, free_port, mcpgw_command
from parity import TestUpstream, gateway_client, registry, served
from test_lifecycle import RawGateway, alive, wait_until

pytestmark = pytest.mark.anyio


def tiny(tag: str = "", *, sleeps: Path | None = None, **options: Any) -> dict[str, Any]:
    """A registry entry for the tiny upstream; `tag` marks its processes so a test can count them;
    `sleeps` is where it notes each `sleep` call as it starts (see `sleeping`)."""
    entry = {
        "command": sys.executable,
        "args": [str(SERVERS / "tiny.py"), tag],
        "era": "handshake",
        **options,
    }
    if sleeps is not None:
        entry["env"] = {"TINY_SLEEP_LOG": str(sleeps)}
    return entry


def sleeping(sleeps: Path, count: int = 1) -> bool:
    """Whether `count` sleep calls have reached the tiny upstream (polled, never slept for)."""
    return sleeps.exists() and len(sleeps.read_text().splitlines()) >= count


def processes_tagged(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if tag.encode() in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.long
def test_kill_9_a_hundred_times_in_the_middle_of_calls(registry_file: Any, tmp_path: Path) -> None:
    tag = f"kill-loop-{uuid.uuid4().hex}"
    sleeps = tmp_path / "sleeps.log"
    config = registry_file({"a": tiny(tag, sleeps=sleeps, timeout=60)}, restart_backoff_max=0.1)
    gateway = RawGateway(config)
    pids: set[int] = set()
    outcomes = {"result": 0, "error": 0}
    try:
        gateway.initialize()
        for i in range(100):
            assert wait_until(lambda: "result" in gateway.call("a__echo", {"message": "up?"}), 60)
            pid = gateway.upstream_pid("a")
            pids.add(pid)
            in_flight = f"in-flight-{i}"
            gateway.start_call(in_flight, "a__sleep", {"seconds": 600})
            assert wait_until(lambda i=i: sleeping(sleeps, i + 1), 60)  # the upstream is in the call
            os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            reply = gateway.reply(in_flight)
            # at once, not when the call's timeout (60 s) or the sleep (600 s) would have ended
            assert time.monotonic() - started < 30, "the call in flight was not answered at once"
            assert "upstream 'a'" in reply["error"]["message"], reply
            for _ in range(2):  # calls right after the death: a result or a clear error, never a hang
                started = time.monotonic()
                reply = gateway.call("a__echo", {"message": "during"})
                assert time.monotonic() - started < 30  # never the call timeout (60 s): no hang
                if "error" in reply:
                    message = reply["error"]["message"]
                    assert message.startswith("upstream 'a': "), reply  # never "Unknown tool"
                    outcomes["error"] += 1
                else:
                    outcomes["result"] += 1
        assert wait_until(lambda: "result" in gateway.call("a__echo", {"message": "end"}), 60)
        pids.add(gateway.upstream_pid("a"))
        assert len(processes_tagged(tag)) == 1  # exactly the live upstream: no leaked children
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(60) == 0
    finally:
        gateway.close()
    assert len(pids) == 101
    assert wait_until(lambda: not processes_tagged(tag), 30), processes_tagged(tag)
    assert outcomes["error"] > 0  # the loop did catch the upstream down


def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_ones(registry_file: Any, tmp_path: Path) -> None:
    tag = f"drain-{uuid.uuid4().hex}"
    sleeps = tmp_path / "sleeps.log"
    config = registry_file({"a": tiny(tag, sleeps=sleeps)}, drain_grace=120)
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        gateway.start_call("slow", "a__sleep", {"seconds": 1.5})
        assert wait_until(lambda: sleeping(sleeps), 60)
        gateway.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "draining 1 in-flight request(s)" in gateway.log(), 60)
        refused = gateway.call("a__echo", {"message": "late"})
        assert "shutting down" in refused["error"]["message"]
        finished = gateway.reply("slow")
        assert finished["result"]["content"][0]["text"] == "slept 1.5"
        assert gateway.process.wait(60) == 0
    finally:
        gateway.close()
    assert wait_until(lambda: not processes_tagged(tag), 30)


def test_the_drain_grace_bounds_shutdown(registry_file: Any, tmp_path: Path) -> None:
    tag = f"grace-{uuid.uuid4().hex}"
    sleeps = tmp_path / "sleeps.log"
    config = registry_file({"a": tiny(tag, sleeps=sleeps)}, drain_grace=0.5)
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        gateway.start_call("stuck", "a__sleep", {"seconds": 600})
        assert wait_until(lambda: sleeping(sleeps), 60)
        stopped = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(120) == 0
        assert time.monotonic() - stopped < 300  # the grace, not the stuck call (600 s), bounded it
    finally:
        gateway.close()
    assert "still in flight after 0.5s" in gateway.log()
    assert wait_until(lambda: not processes_tagged(tag), 30)


async def test_a_tool_timeout_overrides_the_server_timeout() -> None:
    slow, other = TestUpstream(), TestUpstream()
    config = registry({"slow": {"timeout": 30, "tool_timeouts": {"sleep": 0.5}}, "other": {}})
    async with served(config, {"slow": slow, "other": other}) as gw, gateway_client(gw) as gateway:
        started = anyio.current_time()
        with pytest.raises(MCPError) as caught:
            await gateway.call_tool("slow__sleep", {"seconds": 600})
        assert anyio.current_time() - started < 25  # the tool's 0.5 s, not the server's 30 s
        assert "upstream 'slow': tools/call timed out after 0.5s" in caught.value.error.message
        with anyio.fail_after(30):  # the upstream was told to cancel
            await slow.cancelled.wait()
        # other tools of the same server keep the server's timeout; other servers are untouched
        result = await gateway.call_tool("slow__slow", {"steps": 4, "delay": 0.25})
        assert not result.is_error
        assert (await gateway.call_tool("other__echo", {"message": "ok"})).content[0].text == "ok"  # type: ignore[union-attr]


def test_calls_beyond_max_concurrent_wait_their_turn(registry_file: Any, tmp_path: Path) -> None:
    sleeps = tmp_path / "sleeps.log"
    config = registry_file(
        {
            "a": tiny(max_concurrent=2),
            "q": tiny(sleeps=sleeps, max_concurrent=1, timeout=60, tool_timeouts={"echo": 0.5}),
        }
    )
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        for i in range(6):
            gateway.start_call(f"s{i}", "a__sleep", {"seconds": 0.3})
        for i in range(6):
            assert gateway.reply(f"s{i}")["result"]["content"][0]["text"] == "slept 0.3"
        assert gateway.call("a__peak")["result"]["content"][0]["text"] == "2"
        # A queued call waits within its own timeout, then says why it was never sent.
        gateway.start_call("hog", "q__sleep", {"seconds": 6})
        assert wait_until(lambda: sleeping(sleeps), 60)  # the hog holds the slot
        queued = gateway.call("q__echo", {"message": "me too"})
        assert "waited 0.5s for one of its 1 call slots" in queued["error"]["message"], queued
        assert gateway.reply("hog")["result"]["content"][0]["text"] == "slept 6.0"
        assert gateway.call("q__echo", {"message": "now"})["result"]["content"][0]["text"] == "now"
    finally:
        gateway.close()


def test_a_stdio_line_far_over_the_limit_is_skipped_as_it_arrives_and_answered(registry_file: Any) -> None:
    """A 100 MB stdout line stalled its upstream for over a minute (the SDK joined every chunk to the
    line so far): a line over twice `max_result_bytes` is now skipped unread, and its request answered."""
    config = registry_file({"a": tiny()}, max_result_bytes=1024 * 1024)
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        pid = gateway.upstream_pid("a")
        refused = gateway.call("a__big", {"size": 20_000_000})
        assert (
            "over the gateway's limit of 2097152 ([gateway] max_result_bytes)" in refused["error"]["message"]
        )
        assert "dropped unread" in refused["error"]["message"]
        assert gateway.call("a__echo", {"message": "still"})["result"]["content"][0]["text"] == "still"
        assert gateway.upstream_pid("a") == pid  # the same child: skipping a line is not a restart
    finally:
        gateway.close()


@pytest.mark.parametrize("code", [-32000, -32001])
def test_an_upstream_answering_connection_closed_over_stdio_keeps_its_process_and_other_calls(
    registry_file: Any, code: int
) -> None:
    """Over a real stdio pipe: an error reply coded like a lost connection (-32000) or a timeout (-32001)
    used to restart the shared upstream and fail every other call in flight on it."""
    gateway = RawGateway(registry_file({"a": tiny()}))
    try:
        gateway.initialize()
        pid = gateway.upstream_pid("a")
        gateway.start_call("other", "a__sleep", {"seconds": 1.0})
        failed = gateway.call("a__fail", {"code": code, "message": "Connection closed"})
        assert failed["error"] == {"code": code, "message": "Connection closed"}, failed
        assert gateway.reply("other")["result"]["content"][0]["text"] == "slept 1.0"
        assert gateway.upstream_pid("a") == pid
    finally:
        gateway.close()


def test_oversized_requests_and_results_are_refused(registry_file: Any) -> None:
    config = registry_file({"a": tiny()}, max_request_bytes=2048, max_result_bytes=4096)
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        huge = {
            "jsonrpc": "2.0",
            "id": "huge",
            "method": "tools/call",
            "params": {"name": "a__echo", "arguments": {"message": "x" * 100_000}},
        }
        gateway.send(huge)
        refused = gateway.reply(None)  # too large to read its id: answered with id null
        assert refused["error"]["code"] == -32600
        assert "Request too large: over 2048 bytes" in refused["error"]["message"]
        assert gateway.call("a__echo", {"message": "small"})["result"]["content"][0]["text"] == "small"
        too_big = gateway.call("a__big", {"size": 5000})
        assert "upstream 'a'" in too_big["error"]["message"]
        assert "max_result_bytes" in too_big["error"]["message"]
        assert len(gateway.call("a__big", {"size": 3000})["result"]["content"][0]["text"]) == 3000
    finally:
        gateway.close()

    port = free_port()
    command = mcpgw_command("serve", "-t", "http", "--port", str(port), "--config", str(config))
    with background(command, port=port):
        url = f"http://127.0.0.1:{port}/mcp"
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        body = json.dumps(huge).encode()
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == -32600

        def chunks() -> Any:  # no Content-Length: the limit is counted as the body arrives
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        response = httpx.post(url, content=chunks(), headers=headers)
        assert response.status_code == 413
        assert response.json()["error"]["message"].startswith("Request too large")
        assert _http_echo(url, "a__echo")["result"]["content"][0]["text"] == "x"  # and the gateway serves on


def test_a_raised_request_limit_lets_larger_bodies_through(registry_file: Any) -> None:
    config = registry_file({"a": tiny()}, max_request_bytes=6 * 1024 * 1024)
    port = free_port()
    command = mcpgw_command("serve", "-t", "http", "--port", str(port), "--config", str(config))
    with background(command, port=port):
        message = "x" * (5 * 1024 * 1024)  # over the SDK's own 4 MiB default, under ours
        reply = _http_echo(f"http://127.0.0.1:{port}/mcp", "a__echo", message)
        assert reply["result"]["content"][0]["text"] == message


def test_a_dropped_http_upstream_is_noticed_by_ping_and_reconnected(registry_file: Any) -> None:
    port = free_port()
    upstream = [sys.executable, str(UPSTREAM), "--http", str(port)]
    config = registry_file(
        {"h": {"url": f"http://127.0.0.1:{port}/mcp", "timeout": 5}},
        ping_interval=0.3,
        ping_timeout=1,
        restart_backoff_max=0.5,
    )
    with background(upstream, port=port):
        gateway = RawGateway(config)
        gateway.initialize()
        first = gateway.call("h__echo", {"message": "one"})
        assert first["result"]["content"][0]["text"] == "one", first
    try:
        # Gone: the ping notices without any call; the tools stay listed, and calls fail fast, saying so.
        assert wait_until(lambda: gateway.log().count("upstream h failed") >= 1, 10)
        reply = gateway.call("h__echo", {"message": "two"})
        assert reply["error"]["message"].startswith("upstream 'h': down ("), reply
        assert "h__echo" in json.dumps(gateway.request("tools/list"))
        with background(upstream, port=port):
            assert wait_until(lambda: "result" in gateway.call("h__echo", {"message": "three"}), 20)
    finally:
        gateway.close()
    assert gateway.log().count("upstream h ready") >= 2


def test_a_hung_upstream_is_noticed_by_ping_and_restarted(registry_file: Any) -> None:
    config = registry_file({"a": tiny()}, ping_interval=0.3, ping_timeout=0.5, restart_backoff_max=0.2)
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        pid = gateway.upstream_pid("a")
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        assert wait_until(lambda: not alive(pid), 10), "the hung upstream was not replaced"
        assert wait_until(lambda: "result" in gateway.call("a__echo", {"message": "back"}), 10)
        assert gateway.upstream_pid("a") != pid
    finally:
        gateway.close()
    assert "did not answer a ping" in gateway.log()


def test_a_busy_upstream_that_misses_pings_during_a_call_is_not_killed(registry_file: Any) -> None:
    """mcp-server-fetch blocks its loop while extracting a page: missed pings killed it, and its call."""
    config = registry_file({"a": tiny()}, ping_interval=0.3, ping_timeout=0.5, restart_backoff_max=0.2)
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        pid = gateway.upstream_pid("a")
        busy = gateway.call("a__block", {"seconds": 3})  # six ping intervals without an answer
        assert busy["result"]["content"][0]["text"] == "blocked 3", busy
        assert gateway.upstream_pid("a") == pid
    finally:
        gateway.close()
    assert "did not answer a ping" not in gateway.log()


@pytest.mark.long
def test_16_clients_10000_calls_with_upstream_restarts_lose_nothing(
    registry_file: Any, audit_db: Path
) -> None:
    """Nothing lost: every call answered, every call in the audit log, memory back near its start."""
    tag = f"load-{uuid.uuid4().hex}"
    config = registry_file({"up": tiny(tag, timeout=10)}, restart_backoff_max=0.2)
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    load = [sys.executable, str(SERVERS / "load.py"), url]
    command = mcpgw_command("serve", "-t", "http", "--port", str(port), "--config", str(config))
    with background(command, port=port, timeout=60) as gateway:
        warm = subprocess.run([*load, "16", "50"], capture_output=True, text=True, timeout=120)
        assert warm.stdout.strip() == "800 ok", warm.stderr
        rss_start = rss_kib(gateway.pid)
        kills = 0
        running = subprocess.Popen(
            [*load, "16", "625", "--tolerate-errors"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def restart_upstream_now_and_then() -> None:
            nonlocal kills
            while running.poll() is None:
                time.sleep(random.uniform(1.0, 3.0))
                for pid in processes_tagged(tag):
                    if running.poll() is None:
                        os.kill(pid, signal.SIGKILL)
                        kills += 1

        killer = threading.Thread(target=restart_upstream_now_and_then)
        killer.start()
        try:
            out, err = running.communicate(timeout=240)
        finally:
            killer.join()
        answered, _, ok, _, errors, _ = out.split()
        assert running.returncode == 0, err
        assert int(answered) == 10_000  # every call got a result or an error
        assert kills >= 3 and int(errors) > 0 and int(ok) > 5_000, out
        assert wait_until(lambda: "result" in _http_echo(url), 15)
        rss_end = rss_kib(gateway.pid)
        print(f"RSS {rss_start / 1024:.1f} -> {rss_end / 1024:.1f} MiB after {kills} restarts; {out.strip()}")
        assert rss_end - rss_start < 40 * 1024, (rss_start, rss_end)
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
    assert wait_until(lambda: not processes_tagged(tag), 5)
    calls = (
        sqlite_utils.Database(audit_db)
        .execute("select count(*) from events where kind = 'call' and name = 'up__echo'")
        .fetchone()[0]
    )
    assert calls == 10_000 + 800 + 1  # the load, the warm-up and the last check


def _http_echo(url: str, tool: str = "up__echo", message: str = "x") -> dict[str, Any]:
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"message": message}, "_meta": meta},
    }
    response = httpx.post(
        url, json=request, headers={**headers, "Mcp-Method": "tools/call", "Mcp-Name": tool}, verify=TLS
    )
    try:
        return dict(response.json())
    except ValueError:
        return {"error": response.text}


def test_stdio_lines_are_split_in_pieces_and_a_long_one_only_counted() -> None:
    from mcpgw.upstream.stdio import TooLong, _Lines

    lines = _Lines(limit=1000)
    got: list[bytes | TooLong] = []
    for chunk in (
        b'{"a":1}\n{"b"',
        b":2}\n",
        b'{"id":7,"result":"' + b"x" * 5000,
        b"x" * 50_000 + b'"}\n{"c":3}\n',
    ):
        got.extend(lines.feed(chunk))
    assert got[:2] == [b'{"a":1}', b'{"b":2}'] and got[3] == b'{"c":3}'
    long = got[2]
    assert isinstance(long, TooLong) and long.size == 55_020 and long.head.startswith(b'{"id":7,"result":"xx')
    assert len(long.head) == 4096  # the rest was never kept
