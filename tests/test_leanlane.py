"""The lean lane (`server.leanlane`): what it answers equals what the SDK's path answers, and it keeps
cancellation, progress, server-to-client requests and the shutdown answer.

In memory, a client of JSON-RPC lines served as `serve_stdio` serves stdin and stdout; the SDK's path
is the same server with the lane taking nothing. A real process where the pipe is the point (EOF and
SIGTERM with calls in flight).
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import mcp_types as types
import pytest

from conftest import SERVERS, mcpgw_command, stop_group
from mcpgw.audit import AuditLog
from mcpgw.core.gateway import Gateway
from mcpgw.server.handlers import build_server
from mcpgw.server.leanlane import LeanLane
from mcpgw.server.notify import notification_options
from mcpgw.server.pipestreams import PipeMessages, PipeSends
from parity import TestUpstream, raw_tools_server, registry, served

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "lines", "version": "0"},
}
HANG_GUARD = 60.0


class Lines:
    """A client speaking JSON-RPC lines to a gateway; `taken`: the ids the lean lane served."""

    def __init__(self, gateway: Gateway, *, lean: bool) -> None:
        self.server, _ = build_server(gateway)
        self.lane = LeanLane(self.server, write=self._write, drain=anyio.lowlevel.checkpoint)
        self.server.middleware.insert(0, self.lane.observe)
        self._lean = lean
        self._send, self._lines = anyio.create_memory_object_stream[str](math.inf)
        self.out: list[dict[str, Any]] = []
        self._arrived = anyio.Event()
        self.taken: list[Any] = []
        self._next = 0
        self.modern = False

    def _write(self, line: bytes) -> None:
        assert line.endswith(b"\n") and line.count(b"\n") == 1  # one whole line per write
        self.out.append(json.loads(line))
        self._arrived.set()
        self._arrived = anyio.Event()

    def _take(self, message: Any) -> bool:
        if self._lean and self.lane.take(message):
            self.taken.append(message["id"])
            return True
        return False

    async def serve(self) -> None:
        options = self.server.create_initialization_options(notification_options())
        sends = PipeSends(self._write, anyio.lowlevel.checkpoint)
        async with self.lane.serving():
            await self.server.run(PipeMessages(self._lines, self._take), sends, options)

    def send(self, message: dict[str, Any]) -> None:
        self._send.send_nowait(json.dumps(message))

    def close(self) -> None:
        self._send.close()

    def start(
        self, method: str, params: dict[str, Any] | None = None, *, envelope: bool | None = None
    ) -> int:
        self._next += 1
        if params is not None and (self.modern if envelope is None else envelope):
            params = {**params, "_meta": {**ENVELOPE, **params.get("_meta", {})}}
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self._next

    async def wait_for(self, predicate: Any) -> dict[str, Any]:
        with anyio.fail_after(HANG_GUARD):
            while True:
                found = next((m for m in self.out if predicate(m)), None)
                if found is not None:
                    return found
                await self._arrived.wait()

    async def reply(self, request_id: Any) -> dict[str, Any]:
        return await self.wait_for(lambda m: m.get("id") == request_id and "method" not in m)

    async def request(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return await self.reply(self.start(method, params, **kw))

    async def open(self, era: str) -> None:
        """`legacy`: the handshake; `modern`: a first 2026-07-28 request (either way, through the SDK)."""
        if era == "legacy":
            params = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "l", "version": "0"},
            }
            assert "result" in await self.request("initialize", params)
            self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert "result" in await self.request("ping", {})
        else:
            self.modern = True
            assert "result" in await self.request("tools/list", {})


@asynccontextmanager
async def lines_client(gateway: Gateway, *, lean: bool = True) -> AsyncIterator[Lines]:
    client = Lines(gateway, lean=lean)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.serve)
        try:
            yield client
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with served(registry({"up": {}}), {"up": TestUpstream()}) as built:
        yield built


COMMON: list[tuple[str, dict[str, Any] | None]] = [
    ("tools/call", {"name": "up__echo", "arguments": {"message": "hi"}}),
    ("tools/call", {"name": "up__add", "arguments": {"a": 2, "b": 3}}),
    ("tools/call", {"name": "up__fail", "arguments": {}}),
    ("tools/call", {"name": "up__echo", "arguments": "not-an-object"}),
    ("tools/call", {"arguments": {}}),
    ("tools/call", {"name": "nope__echo", "arguments": {}}),
    ("tools/call", {"name": "up__echo", "arguments": {"message": 7}}),
    ("tools/call", None),
    ("resources/read", {"uri": "mcpgw://up/test://static"}),
    ("resources/read", {"uri": "mcpgw://nope/test://static"}),
    ("resources/read", {}),
    ("prompts/get", {"name": "up__greet", "arguments": {"name": "Ann"}}),
    ("prompts/get", {"name": "up__nope"}),
    ("prompts/get", {"name": "up__greet", "arguments": {"name": 3}}),
    (
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "up__greet"}, "argument": {"name": "name", "value": "An"}},
    ),
    ("completion/complete", {"ref": {"type": "ref/nothing"}}),
]
LEGACY_ONLY: list[tuple[str, dict[str, Any] | None]] = [
    (
        "tools/call",
        {"name": "up__echo", "arguments": {}, "_meta": ENVELOPE},
    ),  # an envelope on a handshake connection
]
MODERN_ONLY: list[tuple[str, dict[str, Any] | None]] = [
    (
        "tools/call",
        {"name": "up__echo", "arguments": {}, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}},
    ),
    (
        "tools/call",
        {
            "name": "up__echo",
            "arguments": {},
            "_meta": {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "2099-01-01"},
        },
    ),
    (
        "tools/call",
        {
            "name": "up__echo",
            "arguments": {},
            "_meta": {**ENVELOPE, "io.modelcontextprotocol/logLevel": "loud"},
        },
    ),
    ("tools/call", {"name": "up__echo", "arguments": {}, "_meta": "not-an-object"}),
    (
        "tools/call",
        {
            "name": "up__echo",
            "arguments": {},
            "_meta": {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": 7},
        },
    ),
    (
        "tools/call",
        {"name": "up__echo", "arguments": {}, "_meta": {**ENVELOPE, "io.modelcontextprotocol/clientInfo": 7}},
    ),
]


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_the_lane_answers_as_the_sdk_path_does_good_and_bad_requests(
    gateway: Gateway, era: str
) -> None:
    cases = COMMON + (LEGACY_ONLY if era == "legacy" else MODERN_ONLY)
    answers: dict[bool, list[dict[str, Any]]] = {}
    for lean in (False, True):
        async with lines_client(gateway, lean=lean) as client:
            await client.open(era)
            answers[lean] = []
            for method, params in cases:
                # a case's own `_meta` is sent as written; the others get the era's envelope
                envelope = None if params is None or "_meta" not in params else False
                answer = await client.request(method, params, envelope=envelope)
                answers[lean].append({k: v for k, v in answer.items() if k != "id"})
            if lean:
                assert len(client.taken) >= len(COMMON) - 1  # the lane served them (not the SDK)
            else:
                assert client.taken == []
    for case, sdk, lane in zip(cases, answers[False], answers[True], strict=True):
        assert lane == sdk, case
    assert answers[True][0]["result"]["content"][0]["text"] == "hi"


async def test_a_request_before_initialize_gets_the_sdks_refusal(gateway: Gateway) -> None:
    async with lines_client(gateway) as client:
        reply = await client.request("tools/call", {"name": "up__echo", "arguments": {"message": "early"}})
        params = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "l", "version": "0"},
        }
        assert "result" in await client.request("initialize", params)
        early = await client.request("tools/call", {"name": "up__echo", "arguments": {"message": "early"}})
    assert reply["error"]["code"] == types.INVALID_PARAMS
    assert "result" in early  # accepted once `initialize` was: the SDK's gate, which the lane keeps
    assert client.taken == [3]


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_a_cancelled_lean_call_stops_upstream_and_is_never_answered(era: str) -> None:
    upstream = TestUpstream()
    async with served(registry({"up": {}}), {"up": upstream}) as gateway, lines_client(gateway) as client:
        await client.open(era)
        slow = client.start("tools/call", {"name": "up__sleep", "arguments": {"seconds": 60}})
        with anyio.fail_after(HANG_GUARD):
            while not any(call["name"] == "sleep" for call in upstream.calls):
                await anyio.sleep(0.01)
        client.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": slow}})
        with anyio.fail_after(HANG_GUARD):
            await upstream.cancelled.wait()  # the cancellation went on to the upstream
        after = await client.request("tools/call", {"name": "up__echo", "arguments": {"message": "next"}})
    assert after["result"]["content"][0]["text"] == "next"
    assert slow in client.taken
    assert [m for m in client.out if m.get("id") == slow] == []


async def test_each_lean_call_is_one_row_in_the_order_answered(tmp_path: Path) -> None:
    """The lane queues a call's audit row just after writing its answer (`server.afteranswer`): every
    call still has its row, with how it ended (a failed and a cancelled one too), in the order answered."""
    upstream = TestUpstream()
    log = AuditLog(tmp_path / "audit.db").start()
    async with (
        served(registry({"up": {}}), {"up": upstream}, audit=log) as gateway,
        lines_client(gateway) as client,
    ):
        await client.open("modern")
        slow = client.start("tools/call", {"name": "up__sleep", "arguments": {"seconds": 60}})
        with anyio.fail_after(HANG_GUARD):
            while not any(call["name"] == "sleep" for call in upstream.calls):
                await anyio.sleep(0.01)
        await client.request("tools/call", {"name": "up__echo", "arguments": {"message": "one"}})
        await client.request("tools/call", {"name": "up__fail", "arguments": {}})
        client.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": slow}})
        with anyio.fail_after(HANG_GUARD):
            await upstream.cancelled.wait()
        await client.request("tools/call", {"name": "up__echo", "arguments": {"message": "two"}})
    log.close()
    with sqlite3.connect(tmp_path / "audit.db") as db:
        found = db.execute("select name, outcome from events where kind = 'call' order by id").fetchall()
    assert found == [
        ("up__echo", "ok"),
        ("up__fail", "error"),
        ("up__sleep", "cancelled"),
        ("up__echo", "ok"),
    ]
    assert set(client.taken) >= {slow}


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_progress_of_a_lean_call_reaches_the_client_before_its_answer(
    gateway: Gateway, era: str
) -> None:
    async with lines_client(gateway) as client:
        await client.open(era)
        params = {
            "name": "up__slow",
            "arguments": {"steps": 2, "delay": 0.01},
            "_meta": {"progressToken": "p1"},
        }
        call = client.start("tools/call", params)
        reply = await client.reply(call)
    assert call in client.taken
    progress = [m["params"] for m in client.out if m.get("method") == "notifications/progress"]
    assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [("p1", 1, 2), ("p1", 2, 2)]
    assert client.out.index(reply) > max(client.out.index(m) for m in client.out if m.get("method"))


def _confirming() -> Any:
    """A handshake-era upstream whose `confirm` asks the client (elicitation) and answers what it said."""

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
        answer = await ctx.session.elicit("Go on?", SCHEMA, related_request_id=ctx.request_id)
        return {"content": [{"type": "text", "text": json.dumps(answer.content)}], "isError": False}

    async def list_tools(ctx: Any, params: Any) -> dict[str, Any]:
        return {"tools": [{"name": "confirm", "inputSchema": {"type": "object"}}]}

    return raw_tools_server("confirming", list_tools=list_tools, call_tool=call_tool)


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}}


async def test_an_elicitation_during_a_lean_call_is_answered_through_stdin() -> None:
    """An upstream asks the client mid-call: the request reaches the client, its answer comes back
    through stdin to the waiter (the SDK's dispatcher), and the call completes."""
    config = registry({"up": {"era": "handshake"}}, sampling={"elicitation": "relay"})
    async with served(config, {"up": _confirming()}) as gateway, lines_client(gateway) as client:
        params = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {"form": {}}},
            "clientInfo": {"name": "l", "version": "0"},
        }
        assert "result" in await client.request("initialize", params)
        client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert "result" in await client.request("ping", {})
        call = client.start("tools/call", {"name": "up__confirm", "arguments": {}})
        asked = await client.wait_for(lambda m: m.get("method") == "elicitation/create")
        client.send(
            {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"ok": True}}}
        )
        reply = await client.reply(call)
    assert call in client.taken
    assert asked["params"]["message"] == "Go on?"
    assert reply["result"]["content"][0]["text"] == '{"ok": true}'


def _chatty() -> Any:
    """A handshake-era upstream whose `chat` logs one line at `debug` and one at `warning`, then answers."""

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
        for level in ("debug", "warning"):
            await ctx.session.send_log_message(level, f"a {level} line", related_request_id=ctx.request_id)
        return {"content": [{"type": "text", "text": "said"}], "isError": False}

    async def list_tools(ctx: Any, params: Any) -> dict[str, Any]:
        return {"tools": [{"name": "chat", "inputSchema": {"type": "object"}}]}

    return raw_tools_server("chatty", list_tools=list_tools, call_tool=call_tool)


@pytest.mark.parametrize(
    ("era", "level", "expected"),
    [
        ("legacy", "info", ["warning"]),  # `logging/setLevel`
        ("legacy", None, ["debug", "warning"]),
        ("modern", "info", ["warning"]),  # the request's own `_meta` log level
        ("modern", None, []),  # a 2026-07-28 request that did not ask gets none
    ],
)
async def test_the_log_gate_holds_on_the_lane_as_on_the_sdk_path(
    era: str, level: str | None, expected: list[str]
) -> None:
    config = registry({"up": {"era": "handshake"}})
    seen: dict[bool, list[str]] = {}
    async with served(config, {"up": _chatty()}) as gateway:
        for lean in (False, True):
            async with lines_client(gateway, lean=lean) as client:
                await client.open(era)
                meta: dict[str, Any] = {}
                if level is not None and era == "legacy":
                    assert "result" in await client.request("logging/setLevel", {"level": level})
                elif level is not None:
                    meta = {"io.modelcontextprotocol/logLevel": level}
                call = client.start("tools/call", {"name": "up__chat", "arguments": {}, "_meta": meta})
                assert (await client.reply(call))["result"]["content"][0]["text"] == "said"
                assert (call in client.taken) is lean
                seen[lean] = [
                    m["params"]["level"] for m in client.out if m.get("method") == "notifications/message"
                ]
    assert seen[True] == seen[False] == expected


# --- a real process: the answer to calls in flight when the client goes or a signal stops the gateway


@pytest.fixture(scope="module")
def sleepy_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("lane")
    log = folder / "sleeps.log"
    path = folder / "servers.toml"
    path.write_text(
        f'[servers.up]\ncommand = "{sys.executable}"\nargs = ["{SERVERS / "tiny.py"}"]\n'
        f'env = {{ TINY_SLEEP_LOG = "{log}" }}\n'
        "[gateway]\ndrain_grace = 0.5\n"  # SIGTERM: the call is stopped after half a second, not ten
    )
    return path, log


def _lines(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(message).encode() + b"\n" for message in messages)


def _started(config: Path) -> subprocess.Popen[bytes]:
    """`mcpgw serve` over pipes, past the handshake (so its next call is the lane's)."""
    process = subprocess.Popen(
        mcpgw_command("serve", "--config", str(config)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdin is not None and process.stdout is not None
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "l", "version": "0"}}
    process.stdin.write(
        _lines(
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        )
    )
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["id"] == 1
    assert json.loads(process.stdout.readline())["id"] == 2  # `initialized` is in
    return process


SLEEP = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {"name": "up__sleep", "arguments": {"seconds": 60}},
}


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_calls_in_flight_are_answered_connection_closed_at_shutdown(
    sleepy_registry: tuple[Path, Path], how: str
) -> None:
    config, log = sleepy_registry
    log.write_text("")
    process = _started(config)
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(_lines(SLEEP))
        process.stdin.flush()
        _wait_for_line(log)  # the call reached the upstream
        if how == "eof":
            process.stdin.close()
        else:
            process.send_signal(signal.SIGTERM)
        answer = json.loads(process.stdout.readline())
        if how == "eof":
            assert process.wait(timeout=HANG_GUARD) == 0
    finally:
        stop_group(process, grace=0.5)  # after a SIGTERM the gateway waits out its upstream's grace
    assert answer == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": types.CONNECTION_CLOSED, "message": "Connection closed"},
    }


def test_a_call_cancelled_in_the_same_write_is_never_answered(sleepy_registry: tuple[Path, Path]) -> None:
    """The cancel is read before the call's task first runs: it must still find the call (else the
    call would run on, and be answered `Connection closed` when stdin closes)."""
    config, _ = sleepy_registry
    process = _started(config)
    assert process.stdin is not None and process.stdout is not None
    try:
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}
        echo = {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "up__echo", "arguments": {"message": "x"}},
        }
        brief = {**SLEEP, "params": {"name": "up__sleep", "arguments": {"seconds": 2}}}  # a short stop
        process.stdin.write(_lines(brief, cancel, echo))
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["id"] == 4
        process.stdin.close()
        rest = [json.loads(line) for line in process.stdout]  # everything until the gateway exits
        assert process.wait(timeout=HANG_GUARD) == 0
    finally:
        stop_group(process)
    assert [m for m in rest if m.get("id") == 3] == []


def _wait_for_line(path: Path) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not path.read_text().strip():
        assert time.monotonic() < deadline, "the call never reached the upstream"
        time.sleep(0.02)
