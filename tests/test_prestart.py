"""The pre-server, with real processes: a second `mcpgw serve` over stdio answers its opening requests
from the answers the first saved, before the mcp SDK is imported and while its upstream is blocked
(`tiny.py --gate PATH` reads nothing until PATH exists), and anything that differs falls back to
the normal path, which answers as it always did. One module-scoped registry; each test one process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import mcpgw_command, stop_group, write_registry
from mcpgw.prestart.answers import answers_path, read, save
from mcpgw.security.pins import pin_of, write_lock

TINY = Path(__file__).parent / "servers" / "tiny.py"
HANG_GUARD = 120.0
HANDSHAKE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "raw", "version": "0"},
}
MODERN = {
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
}
EARLY = "answered before the mcp SDK was loaded"
OPENING = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HANDSHAKE},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


@dataclass(frozen=True)
class Saved:
    config: Path
    gate: Path
    """The upstream reads nothing while this file is missing."""
    names: set[str]
    """The tools the gateway lists."""
    audit: Path


class Serve:
    """`mcpgw serve` over pipes, JSON-RPC lines in and out; stderr kept in a file."""

    def __init__(self, saved: Saved, *extra: str, env: dict[str, str] | None = None) -> None:
        # One audit database for the module: its path is in the environment, which the answers' key covers.
        env = {"MCPGW_AUDIT_DB": str(saved.audit), **(env or {})}
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            mcpgw_command("serve", "--config", str(saved.config), "--log-level", "debug", *extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    def send(self, *messages: dict[str, Any] | bytes) -> None:
        assert self.process.stdin is not None
        for message in messages:
            line = message if isinstance(message, bytes) else (json.dumps(message) + "\n").encode()
            self.process.stdin.write(line)
        self.process.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the gateway closed stdout; its log:\n{self.log()}"
        message: dict[str, Any] = json.loads(line)
        return message

    def ask(self, request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send(request(request_id, method, params))
        reply = self.read()
        assert reply.get("id") == request_id, reply
        return reply

    def finish(self) -> str:
        """Close stdin, wait for the exit; the log."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(HANG_GUARD)
        return self.log()

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode()

    def close(self) -> None:
        stop_group(self.process)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def tool_names(reply: dict[str, Any]) -> set[str]:
    return {tool["name"] for tool in reply["result"]["tools"]}


def upstreams_of(gate: Path) -> list[int]:
    """The live processes started with `--gate GATE` (the upstream of this module's registry)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(gate).encode() in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def none_left(gate: Path) -> bool:
    deadline = time.monotonic() + HANG_GUARD
    while upstreams_of(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not upstreams_of(gate)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    """A registry whose first runs (handshake, then 2026-07-28) saved their opening answers; the
    upstream's gate is closed after them."""
    folder = tmp_path_factory.mktemp("prestart")
    gate = folder / "gate"
    entry = {"command": "python", "args": [str(TINY), "--gate", str(gate)]}
    config = write_registry(folder / "servers.toml", {"slow": entry})
    config.write_text(config.read_text() + '\n[personas.reader]\nallow = ["slow__echo"]\n')
    gate.touch()
    setup = Saved(config, gate, set(), folder / "audit.db")
    first = Serve(setup)
    try:
        first.ask(1, "initialize", HANDSHAKE)
        first.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        names = tool_names(first.ask(2, "tools/list"))
        first.finish()
    finally:
        first.close()
    modern = Serve(setup)
    try:  # listed from memory before the upstream settles: its answers are saved once it has
        modern.ask(1, "server/discover", MODERN)
        assert tool_names(modern.ask(2, "tools/list", MODERN)) == names
        deadline = time.monotonic() + HANG_GUARD
        while len(next(iter(json.loads(Path(answers_path(config)).read_text())["answers"].values()))) < 4:
            assert time.monotonic() < deadline, modern.log()
            time.sleep(0.05)
        modern.finish()
    finally:
        modern.close()
    gate.unlink()
    yield Saved(config, gate, names, setup.audit)
    gate.touch()
    assert none_left(gate)


def early(log: str) -> str:
    """The pre-server's own line in a gateway's log ("" when it answered nothing)."""
    return next((line for line in log.splitlines() if EARLY in line), "")


def test_a_second_start_answers_the_handshake_and_the_list_while_the_upstream_is_blocked(
    saved: Saved,
) -> None:
    listed = audited_lists(saved)
    serve = Serve(saved)
    try:
        # Sent at once, so that they are in the pipe when the pre-server starts (a client that waits
        # for each answer is no slower to be answered, but this test process may be off the CPU).
        serve.send(*OPENING)
        assert serve.read()["result"]["protocolVersion"] == "2025-11-25"
        assert tool_names(serve.read()) == saved.names
        assert not saved.gate.exists()  # the upstream has not served: it reads nothing yet
        serve.send(request(3, "ping"))
        assert serve.read() == {"jsonrpc": "2.0", "id": 3, "result": {}}  # nothing was answered twice
        log = serve.finish()
    finally:
        serve.close()
    assert serve.process.returncode == 0, log
    line = early(log)
    assert "initialize (id 1)" in line and "tools/list (id 2)" in line, log
    assert "mcp SDK imported: no" in line and "mcp SDK imported: yes" not in line
    assert none_left(saved.gate)
    assert audited_lists(saved) == listed + 1  # the early answer has its audit row, as any list


def audited_lists(saved: Saved) -> int:
    with sqlite3.connect(saved.audit) as db:
        rows: int = db.execute("select count(*) from events where method = 'tools/list'").fetchone()[0]
    return rows


@pytest.mark.parametrize("change", ["registry", "lock", "persona", "version"])
def test_anything_that_differs_goes_the_normal_path(saved: Saved, change: str) -> None:
    """Each change alters what the client must see; the normal path answers it (lists from memory,
    the upstream still blocked), where answers saved for the old inputs would be wrong."""
    text = saved.config.read_text()
    lock = saved.config.with_suffix(".lock")
    extra: tuple[str, ...] = ()
    version, expected = "2025-11-25", {"slow__echo"}
    if change == "registry":
        saved.config.write_text(text + '\n[personas.default]\nallow = ["slow__echo"]\n')
    elif change == "lock":  # echo pinned as something else (prototype mode: served, with a warning)
        pinned = {"name": "echo", "description": "Another echo.", "inputSchema": {"type": "object"}}
        write_lock(lock, {"slow": {"tools": {"echo": pin_of("tools", pinned)}}})
        expected = saved.names
    elif change == "persona":
        extra = ("--persona", "reader")
    else:
        version, expected = "2025-06-18", saved.names
    serve = Serve(saved, *extra)
    try:
        answer = serve.ask(1, "initialize", {**HANDSHAKE, "protocolVersion": version})
        assert answer["result"]["protocolVersion"] == version
        serve.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert tool_names(serve.ask(2, "tools/list")) == expected
        log = serve.finish()
    finally:
        serve.close()
        saved.config.write_text(text)
        lock.unlink(missing_ok=True)
    assert serve.process.returncode == 0, log
    assert not early(log), log


def test_a_2026_client_is_answered_early_too(saved: Saved) -> None:
    serve = Serve(saved)
    try:
        serve.send(request(1, "server/discover", MODERN), request(2, "tools/list", MODERN))
        assert serve.read()["result"]["supportedVersions"]
        assert tool_names(serve.read()) == saved.names
        log = serve.finish()
    finally:
        serve.close()
    assert "server/discover (id 1)" in early(log) and "tools/list (id 2)" in early(log), log


def test_malformed_lines_get_the_answers_they_get_without_the_pre_server(saved: Saved) -> None:
    lines = [b"not json\n", b'{"jsonrpc": "2.0", "id": 7}\n', b"[]\n"]
    answers: dict[bool, list[str]] = {}
    for prestart in (True, False):
        # Any MCPGW_ variable is part of the answers' key: a new one makes the pre-server stand aside.
        serve = Serve(saved, env={} if prestart else {"MCPGW_PRESTART_TEST": "off"})
        try:
            serve.send(*lines, request(1, "initialize", HANDSHAKE))
            got = [serve.read() for _ in range(len(lines) + 1)]
            log = serve.finish()
        finally:
            serve.close()
        assert bool(early(log)) is prestart, log
        answers[prestart] = sorted(json.dumps(message, sort_keys=True) for message in got)
    assert answers[True] == answers[False]


@pytest.mark.parametrize("end", ["eof", "sigterm"])
def test_the_client_leaving_during_the_pre_server_stops_it_cleanly(saved: Saved, end: str) -> None:
    serve = Serve(saved)
    try:
        serve.ask(1, "initialize", HANDSHAKE)
        if end == "eof":
            log = serve.finish()
        else:
            serve.process.send_signal(signal.SIGTERM)
            serve.process.wait(HANG_GUARD)
            log = serve.log()
    finally:
        serve.close()
    assert serve.process.returncode == 0, log
    assert none_left(saved.gate)


def test_a_pipelined_client_gets_every_answer_once_and_its_call_waits(saved: Saved) -> None:
    """initialize, initialized, tools/list and tools/call sent at once: the first two answered early,
    the call answered once the upstream has started (the gate opened only then)."""
    serve = Serve(saved)
    try:
        serve.send(
            *OPENING,
            request(3, "tools/call", {"name": "slow__echo", "arguments": {"message": "hi"}}),
        )
        assert serve.read()["id"] == 1
        assert tool_names(serve.read()) == saved.names
        saved.gate.touch()
        called = serve.read()
        assert called["id"] == 3 and called["result"]["content"][0]["text"] == "hi", called
        serve.send(request(4, "ping"))
        assert serve.read()["id"] == 4  # no answer came twice
        log = serve.finish()
    finally:
        serve.close()
        saved.gate.unlink(missing_ok=True)
    line = early(log)  # all four lines were in the pipe at spawn: both answers came before the SDK's import
    assert "tools/list (id 2)" in line and "mcp SDK imported: yes" not in line, log


def test_an_early_list_the_gateway_finds_different_is_announced_as_changed(saved: Saved) -> None:
    """The saved list edited by hand (its key untouched): the client gets it early, then
    `list_changed` from the full gateway, whose list is the catalog's."""
    path = Path(answers_path(saved.config))
    original = path.read_bytes()
    data = json.loads(original)
    for answers in data["answers"].values():
        for result in answers.values():
            if "tools" in result:
                result["tools"] = [tool for tool in result["tools"] if tool["name"] != "slow__echo"]
    path.write_text(json.dumps(data))
    serve = Serve(saved)
    try:
        serve.send(*OPENING)
        assert serve.read()["id"] == 1
        assert tool_names(serve.read()) == saved.names - {"slow__echo"}
        assert serve.read() == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        assert tool_names(serve.ask(3, "tools/list")) == saved.names
        log = serve.finish()
    finally:
        serve.close()
        path.write_bytes(original)
    assert "tools/list (id 2)" in early(log), log


def test_lists_are_not_saved_while_an_upstream_fails(saved: Saved, tmp_path: Path) -> None:
    """With a server that never starts, the next start waits for the upstreams before it lists (its
    memory is not complete), so no list is answered early either; the handshake still is."""
    config = write_registry(
        tmp_path / "servers.toml",
        {
            "fine": {"command": "python", "args": [str(TINY)]},
            "broken": {"command": "python", "args": ["-c", "raise SystemExit(3)"]},
        },
    )
    runs = Saved(config, saved.gate, set(), saved.audit)
    logs = []
    for _ in range(2):
        serve = Serve(runs)
        try:
            serve.ask(1, "initialize", HANDSHAKE)
            serve.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert "fine__echo" in tool_names(serve.ask(2, "tools/list"))
            logs.append(serve.finish())
        finally:
            serve.close()
    assert "initialize (id 1)" in early(logs[1]) and "tools/list" not in early(logs[1]), logs[1]


def test_saved_answers_others_may_write_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "servers.answers.json"
    assert save(path, files=[], memory="", inputs="d", answers={"k": {"tools": []}})
    assert path.stat().st_mode & 0o777 == 0o600
    assert read(path) is not None
    path.chmod(0o666)  # anyone could have put words in the gateway's mouth
    assert read(path) is None
