"""One HTTP/1.1 exchange on a pooled keep-alive connection, for the lean path's POSTs to a plain-HTTP
upstream.

Owns: `Exchanges`, the keep-alive connections of one upstream URL and the POST sent on one of them,
whose answer is handed back as an `httpx2.Response` (read, streamed and decoded by httpx as any), or,
for the common answer (200, `application/json`, a `Content-Length`, nothing encoded, no cookie), as
its body's bytes, read whole: building httpx's request and response models for it cost more CPU
than the exchange itself.

Why not the upstream's httpx client for these requests: measured in one process over loopback, a
POST and the read of a small JSON answer cost 540-590 us of CPU through `httpx2.AsyncClient`
(its request and response models, auth and redirect layers, then httpcore's pool, h11's checks and
anyio's streams), 320 us through httpcore alone, and about 20 us as bytes on asyncio streams; per
forwarded call that was a third of the gateway's own CPU. The client stays for everything this
does not take (`HttpWire` decides): TLS, proxies, a login's token, tracing's hooks, and any answer
that is a redirect or an auth challenge, which is sent again through httpx, whose flow answers it
(the upstream refused the first, so it ran nothing).
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2

MAX_HEAD = 64 * 1024
"""Bytes in a response's status line and headers (as h11 allows by default)."""
READ_SIZE = 64 * 1024
STALE_AFTER = 1.0
"""Seconds idle after which a connection closed under a request's feet is retried on a new one."""
RETRY_STATUSES = frozenset({301, 302, 303, 307, 308, 401, 403})
"""Answers left to the httpx client: its redirect rule and its auth flow read them."""
_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "accept-encoding"})
"""Set here (or, for `accept-encoding`, left out: answers come unencoded, nothing to decode)."""


_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(
    r"(?:[^\x00-\x08\x0a-\x1f\x7f\s](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x08\x0a-\x1f\x7f\s])?)?"
)
"""RFC 9110 field names and values (h11's rules): no control characters, no edge whitespace."""


_CHECKED: dict[tuple[str, str], str] = {}
"""Header fields already checked, as their line ("" for one left out): most recur on every call."""
CHECKED_FIELDS = 512
CHECKED_VALUE_CHARS = 256
"""Only short values are remembered, and at most this many fields (then the memory starts again)."""


def _checked(name: str, value: str) -> str:
    """The request line for a header field ("" if it is left out), checked as h11 checks it: a value
    with a line break would start a header (or a request) of its own, and the resource URI in
    `Mcp-Name` is the caller's."""
    if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
        raise httpx2.LocalProtocolError(f"illegal header {name!r}: {value[:80]!r}")
    line = "" if name.lower() in _DROPPED else f"{name}: {value}"
    if len(value) <= CHECKED_VALUE_CHARS:
        if len(_CHECKED) >= CHECKED_FIELDS:
            _CHECKED.clear()
        _CHECKED[(name, value)] = line
    return line


class Refused(Exception):
    """The answer is one the httpx client must see for itself (`RETRY_STATUSES`)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class _Body(httpx2.AsyncByteStream):
    """An answer's body as it is read; the connection goes back to the pool once it is read whole."""

    def __init__(self, pool: Exchanges, connection: _Connection, length: int | None, chunked: bool) -> None:
        self._pool, self._connection = pool, connection
        self._length, self._chunked = length, chunked
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self._connection.reader
        try:
            if self._chunked:
                while size := await _chunk_size(reader):
                    yield await reader.readexactly(size)
                    await reader.readexactly(2)
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the end
                    pass
            elif self._length is not None:
                left = self._length
                while left:
                    data = await reader.read(min(left, READ_SIZE))
                    if not data:
                        raise httpx2.RemoteProtocolError(
                            "peer closed connection without sending complete message body"
                        )
                    left -= len(data)
                    yield data
            else:  # delimited by the connection's end: not reusable
                while data := await reader.read(READ_SIZE):
                    yield data
                return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as exc:
            raise httpx2.RemoteProtocolError(f"the answer's body was cut short or malformed: {exc}") from exc
        self._done = True

    async def aclose(self) -> None:
        if self._done:
            self._pool.release(self._connection)
        else:
            self._connection.close()


async def _chunk_size(reader: asyncio.StreamReader) -> int:
    line = await reader.readuntil(b"\r\n")
    return int(line.split(b";", 1)[0].strip(), 16)


class Exchanges:
    """Keep-alive connections to one plain-HTTP URL, and a POST on one of them."""

    def __init__(self, url: httpx2.URL) -> None:
        self.host = url.host
        self.port = url.port or 80
        self.target = url.raw_path.decode("ascii")
        self.authority = url.netloc.decode("ascii")
        self.idle: list[_Connection] = []

    def close(self) -> None:
        """Close the idle connections (one in use is closed by its request)."""
        while self.idle:
            self.idle.pop().close()

    def release(self, connection: _Connection) -> None:
        """An answer read whole: its connection back to the idle ones, if the server left it open."""
        if connection.usable():
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        else:
            connection.close()

    def head(self, headers: list[tuple[str, str]]) -> bytes:
        """The request line and header lines of a POST with `headers` (all but its Content-Length),
        checked as h11 checks them; the same for every POST with the same headers."""
        lines = [f"POST {self.target} HTTP/1.1", f"Host: {self.authority}"]
        for field in headers:
            line = _CHECKED.get(field)
            if line is None:
                line = _checked(*field)
            if line:
                lines.append(line)
        try:
            return ("\r\n".join(lines) + "\r\n").encode("latin-1")
        except UnicodeEncodeError as exc:
            raise httpx2.LocalProtocolError(f"a header is not latin-1: {exc}") from exc

    async def post(self, body: bytes, head: bytes) -> httpx2.Response | bytes:
        """The answer to one POST of `body` after `head` (made by `head`); bytes: a plain JSON answer's
        body; `Refused` for an answer the httpx client must see itself."""
        message = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        while self.idle:
            connection = self.idle.pop()
            if not connection.usable():
                connection.close()
                continue
            # A connection idle past a second may have met the server's keep-alive timeout as the
            # request went: closed without a byte of answer, it is sent again on a new one. Sooner,
            # the server may have run it and gone: an error, never a second run.
            try:
                expired = time.monotonic() - connection.idle_since >= STALE_AFTER
                return await self._exchange(connection, message, fresh=not expired)
            except _Stale:
                continue
        return await self._exchange(await self._connect(), message, fresh=True)

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        except OSError as exc:
            raise httpx2.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, message: bytes, *, fresh: bool
    ) -> httpx2.Response | bytes:
        kept = False
        try:
            connection.writer.write(message)
            try:
                head = await _head(connection.reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if not fresh and not getattr(exc, "partial", b""):
                    raise _Stale from exc
                raise httpx2.RemoteProtocolError("Server disconnected without sending a response.") from exc
            status, fields, length, chunked, closing, plain = _read_head(head)
            if status in RETRY_STATUSES:
                raise Refused(status)
            if plain and length is not None:
                data = await connection.reader.readexactly(length)
                if closing:
                    connection.close()
                else:
                    self.release(connection)
                kept = True
                return data
            body = (_Closing if closing else _Body)(self, connection, length, chunked)
            kept = True
            return httpx2.Response(status, headers=fields, stream=body)
        except asyncio.IncompleteReadError as exc:  # the plain JSON answer's body, cut short
            raise httpx2.RemoteProtocolError(f"the answer's body was cut short or malformed: {exc}") from exc
        except (OSError, asyncio.LimitOverrunError, ValueError) as exc:
            raise httpx2.RemoteProtocolError(f"malformed or failed answer: {exc}") from exc
        finally:
            if not kept:
                connection.close()


class _Closing(_Body):
    """A body whose connection the server closes after it (`Connection: close`)."""

    async def aclose(self) -> None:
        self._connection.close()


class _Stale(Exception):
    """A reused connection turned out closed before its answer began."""


async def _head(reader: asyncio.StreamReader) -> bytes:
    """The status line and headers of the final answer (interim 1xx answers skipped)."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 1") or head.startswith(b"HTTP/1.1 101"):
            return head


_Head = tuple[int, list[tuple[str, str]], int | None, bool, bool, bool]
_HEADS: dict[bytes, _Head] = {}
"""Answer heads already read, by their bytes: an upstream sends the same head, but for its `Date` (a
new one each second) and `Content-Length`, answer after answer."""
HEADS_KEPT = 64


def _read_head(head: bytes) -> _Head:
    """An answer's status, header fields, body length (None: chunked or to the connection's end),
    whether chunked, whether the server closes the connection after it, and whether it is a plain
    JSON answer (200, `application/json`, a length, nothing encoded, no cookie) read whole here."""
    known = _HEADS.get(head)
    if known is not None:
        return known
    status, fields = _parse(head)
    if status in RETRY_STATUSES:  # for the httpx client to read: nothing more is needed of it here
        return status, fields, None, False, False, False
    names = {k.lower(): v for k, v in fields}
    chunked = "chunked" in names.get("transfer-encoding", "").lower()
    length = None if chunked else _length(names.get("content-length"))
    if status in (204, 304):
        length, chunked = 0, False
    closing = "close" in names.get("connection", "").lower()
    plain = (
        status == 200
        and length is not None
        and names.get("content-type", "").lower().startswith("application/json")
        and "set-cookie" not in names
        and names.get("content-encoding", "identity").lower() == "identity"
    )
    read = (status, fields, length, chunked, closing, plain)
    if len(_HEADS) >= HEADS_KEPT:
        _HEADS.clear()
    _HEADS[head] = read
    return read


def _parse(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(rest[:3])
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise ValueError(f"malformed header line {line[:80]!r}")
        fields.append((name, value.strip(" \t")))
    return status, fields


def _length(value: Any) -> int | None:
    if value is None:
        return None
    if not str(value).isdigit():
        raise ValueError(f"bad Content-Length {value!r}")
    return int(value)
