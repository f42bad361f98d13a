"""A stdio upstream's output is routed from the pipe's protocol callback (`upstream.stdio._Routing`).

An answer to a lean request wakes its caller as its line arrives, but never ahead of a line the
upstream sent before it that is still being handled (a log line said during the call reaches the call
first), and a flood of lines nobody takes yet stops the pipe being read until they are handled, as a
stream reader's limit did. A real pipe, in memory: the protocol callback is the point. And a lean
request is stamped as the SDK's stamp would (`wire.stamp_of`), checked against a negotiated session.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import anyio
import pytest
from mcp_types import CLIENT_CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY, PROTOCOL_VERSION_META_KEY

import parity
from mcpgw import _compat
from mcpgw.upstream.deadlines import UNLIMITED
from mcpgw.upstream.stdio import _Routing
from mcpgw.upstream.wire import LeanWire, stamp_of
from test_gateway import wait_until as until

pytestmark = pytest.mark.anyio


async def piped(routing: _Routing) -> asyncio.WriteTransport:
    """A real pipe whose read end feeds `routing` from its protocol, as a child's stdout does."""
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()

    class Feed(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            routing.feed(data)

        def eof_received(self) -> bool | None:
            routing.end()
            return None

    reading, _ = await loop.connect_read_pipe(Feed, os.fdopen(read_end, "rb", 0))
    routing.transport = reading
    writing, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_end, "wb", 0))

    return writing  # closing it ends the output; the read end then closes itself (`eof_received`)


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


async def test_an_answer_waits_behind_a_log_line_still_being_handled() -> None:
    sent: list[bytes] = []

    async def write(data: bytes) -> None:
        sent.append(data)

    wire = LeanWire(write)
    seen: list[str] = []
    logged = asyncio.Event()
    release = asyncio.Event()

    async def on_log(method: str, params: dict[str, Any] | None) -> None:
        logged.set()
        await release.wait()
        seen.append(f"log {params}")

    wire.on_log = on_log
    routing = _Routing(wire, 1 << 20)
    writing = await piped(routing)
    delivered: list[Any] = []

    async def deliver(message: Any) -> None:
        delivered.append(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(routing.run, deliver)
        call = asyncio.ensure_future(
            wire.request("tools/call", {"name": "t"}, timeout=UNLIMITED, on_progress=None)
        )
        await until(lambda: bool(sent))
        request_id = json.loads(sent[0])["id"]
        log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": 1}}
        answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": []}}
        writing.write(line(log) + line(answer))
        await until(logged.is_set)
        await until(lambda: len(routing.held) == 2)  # the answer came, and waits behind the log line
        assert not call.done()
        release.set()
        message, _ = await call
        seen.append("answer")
        assert message["result"] == {"content": []}
        assert seen == ["log {'level': 'info', 'data': 1}", "answer"]
        assert delivered == []
        writing.close()
        await until(lambda: routing.ended)
        tg.cancel_scope.cancel()


async def test_a_flood_nobody_takes_pauses_the_pipe_until_it_is_handled() -> None:
    async def write(data: bytes) -> None:
        pass

    routing = _Routing(LeanWire(write), 1 << 20)
    writing = await piped(routing)
    gate = asyncio.Event()
    delivered: list[Any] = []

    async def deliver(message: Any) -> None:
        await gate.wait()
        delivered.append(message)

    note = line({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    count = 3 * _Routing.HOLD // len(note)
    reading = routing.transport
    assert isinstance(reading, asyncio.ReadTransport)
    async with anyio.create_task_group() as tg:
        tg.start_soon(routing.run, deliver)
        writing.write(note * count)
        await until(lambda: routing.paused)
        assert not reading.is_reading()
        assert len(routing.held) < count  # the rest waits in the pipe, not in the gateway
        gate.set()
        await until(lambda: len(delivered) == count)
        assert reading.is_reading() and not routing.paused
        assert all(m.message.method == "notifications/tools/list_changed" for m in delivered)
        writing.close()
        await until(lambda: routing.ended)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("era", ["stateless", "handshake"])
async def test_a_lean_request_is_stamped_as_the_sdks_stamp_would(era: str) -> None:
    """The stdio wire stamps `_meta` from what it learnt of the session's stamp (`wire.stamp_of`):
    the same keys and values the SDK's stamp writes, a request's own capabilities and log level kept."""
    sent: list[bytes] = []

    async def write(data: bytes) -> None:
        sent.append(data)

    upstream = parity.TestUpstream()
    async with parity.served(parity.registry({"up": {"era": era}}), {"up": upstream}, audit=None) as gateway:
        client = gateway.upstreams["up"]._session.client
        assert client is not None
        wire = LeanWire(write)
        wire.stamp_of = lambda method: stamp_of(client, method)
        own = {"k": 1, CLIENT_CAPABILITIES_META_KEY: {"roots": {}}, LOG_LEVEL_META_KEY: "error"}
        for count, meta in enumerate((None, own), start=1):
            params: dict[str, Any] = {"name": "echo", "arguments": {"message": "hi"}}
            if meta is not None:
                params["_meta"] = dict(meta)
            expected = {"method": "tools/call", "params": json.loads(json.dumps(params))}
            _compat.stamp_request(client, expected)  # the SDK's own stamp, as `session.send_request` runs it
            call = asyncio.ensure_future(
                wire.request("tools/call", params, timeout=UNLIMITED, on_progress=None)
            )
            await until(lambda: len(sent) == count)  # noqa: B023 (awaited within the iteration)
            written = json.loads(sent[-1])
            assert written["params"] == expected["params"]
            assert params.get("_meta") == meta  # the caller's own stays as it was
            wire.answered({"jsonrpc": "2.0", "id": written["id"], "result": {}})
            await call
        if era == "stateless":
            assert written["params"]["_meta"][CLIENT_CAPABILITIES_META_KEY] == {"roots": {}}
            assert PROTOCOL_VERSION_META_KEY in written["params"]["_meta"]
        else:
            assert written["params"]["_meta"] == own
