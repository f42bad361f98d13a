"""The lean path's own HTTP/1.1 exchange (`upstream.http1`) against servers on loopback that answer
in each way HTTP allows: a length or chunks, keep-alive or close, a connection closed while idle, a
redirect or an auth challenge (left to httpx), a refused connection, an answer cut short."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from mcpgw.upstream import http1
from mcpgw.upstream.httpwire import HttpWire

pytestmark = pytest.mark.anyio

HANG_GUARD = 20
Answer = Callable[[int], bytes]
"""The bytes a server writes for its n-th request (counted from 0 over all connections)."""


class Server:
    def __init__(self, answer: Answer, *, close_after: bool = False) -> None:
        self.answer, self.close_after = answer, close_after
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.answer(len(self.requests) - 1))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@asynccontextmanager
async def listening(server: Server) -> AsyncIterator[int]:
    """`server` on a free loopback port (yielded), under a hang guard."""
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        with anyio.fail_after(HANG_GUARD):
            yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[http1.Exchanges]:
    async with listening(server) as port:
        yield http1.Exchanges(httpx2.URL(f"http://127.0.0.1:{port}/mcp?x=1"))


def json_answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(e + b"\r\n" for e in extra)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


async def post(exchanges: http1.Exchanges, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await exchanges.post(
        body, exchanges.head([("content-type", "application/json"), ("accept-encoding", "gzip")])
    )
    if isinstance(response, bytes):  # a plain JSON answer, read whole
        return 200, response
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


async def test_answers_by_length_reuse_the_connection() -> None:
    server = Server(lambda n: json_answer(b'{"n":%d}' % n))
    async with serving(server) as exchanges:
        assert await post(exchanges) == (200, b'{"n":0}')
        assert await post(exchanges, b'{"a":1}') == (200, b'{"n":1}')
        (kept,) = exchanges.idle
        exchanges.close()
        assert not exchanges.idle and kept.writer.is_closing()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /mcp?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"accept-encoding" not in first.lower() and server.requests[1].endswith(b'{"a":1}')


@pytest.mark.parametrize(
    ("extra", "plain"),
    [
        ((), True),
        ((b"set-cookie: a=1",), False),  # for the client's cookie jar: httpx reads it
        ((b"content-encoding: gzip",), False),  # for httpx to decode
    ],
)
async def test_a_plain_json_answer_is_its_body_else_a_response(extra: tuple[bytes, ...], plain: bool) -> None:
    server = Server(lambda n: json_answer(b'{"n":%d}' % n, *extra))
    async with serving(server) as exchanges:
        for n in range(2):
            answer = await exchanges.post(b"{}", exchanges.head([("content-type", "application/json")]))
            if plain:
                assert answer == b'{"n":%d}' % n
            else:
                assert isinstance(answer, httpx2.Response) and answer.status_code == 200
                assert b"".join([chunk async for chunk in answer.aiter_raw()]) == b'{"n":%d}' % n
                await answer.aclose()
    assert server.connections == 1  # kept alive either way


async def test_a_chunked_answer_is_read_whole_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b'3;ext=1\r\n{"a\r\n4\r\n":1}\r\n0\r\nx-t: 1\r\n\r\n'
    )
    server = Server(lambda n: chunked)
    async with serving(server) as exchanges:
        assert await post(exchanges) == (200, b'{"a":1}')
        assert await post(exchanges) == (200, b'{"a":1}')
    assert server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    server = Server(lambda n: json_answer(b"{}"), close_after=True)  # no `Connection: close` said
    async with serving(server) as exchanges:
        assert await post(exchanges) == (200, b"{}")
        with anyio.fail_after(10):  # a hang guard
            while exchanges.idle[0].usable():  # until the server's close has arrived
                await anyio.sleep(0.01)
        assert await post(exchanges) == (200, b"{}")
    assert server.connections == 2 and len(server.requests) == 2


async def test_connection_close_is_honoured() -> None:
    server = Server(lambda n: json_answer(b"{}", b"connection: close"), close_after=True)
    async with serving(server) as exchanges:
        assert await post(exchanges) == (200, b"{}")
        assert not exchanges.idle


@pytest.mark.parametrize("status", [307, 401, 403])
async def test_redirects_and_auth_challenges_are_left_to_httpx(status: int) -> None:
    server = Server(lambda n: b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % status)
    async with serving(server) as exchanges:
        with pytest.raises(http1.Refused):
            await post(exchanges)


async def test_a_refused_connection_is_a_connect_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(httpx2.ConnectError):
        await post(http1.Exchanges(httpx2.URL(f"http://127.0.0.1:{port}/mcp")))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}",  # cut short
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{}",  # read whole
        b"HTTP/1.1 200 OK\r\nbroken header\r\ncontent-length: 2\r\n\r\n{}",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"",  # closed without a word
    ],
)
async def test_a_broken_answer_is_a_protocol_error(answer: bytes) -> None:
    server = Server(lambda n: answer, close_after=True)
    async with serving(server) as exchanges:
        with pytest.raises(httpx2.RemoteProtocolError):
            await post(exchanges)
        assert not exchanges.idle


@pytest.mark.parametrize(
    "header", [("mcp-name", "x\r\nEvil: 1"), ("mcp-name", "x\n"), ("bad name", "x"), ("mcp-name", " padded")]
)
async def test_a_header_that_would_break_the_request_is_refused_before_sending(
    header: tuple[str, str],
) -> None:
    server = Server(lambda n: json_answer(b"{}"))
    async with serving(server) as exchanges:
        with pytest.raises(httpx2.LocalProtocolError):
            await exchanges.post(b"{}", exchanges.head([header]))
    assert not server.requests


class Drops(Server):
    """Answers the first request on each connection; reads the second and closes without a word."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        for n in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            self.requests.append(await reader.readexactly(length))
            if n == 0:
                writer.write(json_answer(b"{}"))
                await writer.drain()
        writer.close()


async def test_a_request_the_server_read_and_dropped_is_not_sent_twice() -> None:
    server = Drops(lambda n: b"")
    async with serving(server) as exchanges:
        assert await post(exchanges) == (200, b"{}")
        with pytest.raises(httpx2.RemoteProtocolError):
            await post(exchanges)
    assert len(server.requests) == 2  # it may have run: no second run


async def test_a_connection_idle_past_the_keep_alive_race_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "STALE_AFTER", 0.0)  # as if idle for long
    server = Drops(lambda n: b"")
    async with serving(server) as exchanges:
        assert await post(exchanges) == (200, b"{}")
        assert await post(exchanges) == (200, b"{}")
    assert server.connections == 2


async def test_a_request_past_its_timeout_is_dropped_with_its_connection() -> None:
    """`HttpWire`'s timer on this path: no answer in time is `TimeoutError` and the connection it waited
    on is closed (the 2026-07-28 way to cancel over HTTP); the next request goes on a new one, and an
    unbounded timeout (`inf` in the registry) waits for its answer."""
    server = Server(
        lambda n: b"" if n == 0 else json_answer(b'{"jsonrpc":"2.0","id":1,"result":{"n":%d}}' % n)
    )

    async def notified(method: str, params: dict[str, Any] | None) -> None:
        raise AssertionError(method)

    async with listening(server) as port, httpx2.AsyncClient() as http:
        wire = HttpWire(http, f"http://127.0.0.1:{port}/mcp")
        try:
            with pytest.raises(TimeoutError):
                await wire.request("ping", {}, headers={}, timeout=0.2, on_progress=None, on_notify=notified)
            answer, _ = await wire.request(
                "ping", {}, headers={}, timeout=math.inf, on_progress=None, on_notify=notified
            )
        finally:
            wire.close()
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": {"n": 1}}
    assert server.connections == 2
