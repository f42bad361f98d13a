"""The stdio transport to an upstream child: its own process group, and lines read in linear time, bounded.

Owns: spawning the child (a new session, so its process group is known at once and the whole group
can be stopped; the `reaper` watchdog is told of it, so even a gateway killed with SIGKILL leaves no
orphan), reading its stdout as JSON-RPC lines, writing ours to its stdin, and stopping it (stdin
closed, then SIGTERM and SIGKILL to the group; in a hurry, SIGTERM at once: see `stdio_transport`).

Why not the SDK's `stdio_client`: it joins each chunk to the line so far (`(buffer + chunk).split`),
which is quadratic in a line's length, with no bound: one 30 MB result stalled every call to that
upstream for 13 to 28 s, and a 100 MB line for over a minute. Here a line is collected in pieces and
joined once, and a line longer than the limit is skipped as it arrives, never held whole: the
request it answered gets an error reply naming the limit (its id is read from the line's start).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TextIO

import anyio
import mcp_types as types
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.shared.message import SessionMessage

from mcpgw import _compat
from mcpgw.upstream import reaper
from mcpgw.upstream.wire import UNSIZED, LeanWire, parse

logger = logging.getLogger("mcpgw.upstream")

EXIT_GRACE = 2.0
"""Seconds the child has to exit once its stdin is closed, and again after SIGTERM."""
HURRIED_GRACE = 0.5
"""Seconds between SIGTERM and SIGKILL when stopping in a hurry: a stdio gateway's own client gives it
2 s (the mcp SDK's `PROCESS_TERMINATION_TIMEOUT`) from closing its stdin to SIGTERM."""
_HEAD = 4096
"""Bytes kept of a line that is too long: enough to find its id."""
_ID = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,20})')
_KEY = re.compile(rb'"(result|error|method)"\s*:')
"""The first of these keys says what the line is (members come in the sender's order, and top-level
keys come before anything nested in a result)."""


class _Lines:
    """Splits a byte stream into lines; a line over `limit` comes out as `TooLong` with its first bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pieces: list[bytes] = []
        self._size = 0
        self._too_long = False

    def feed(self, chunk: bytes) -> Iterator[bytes | TooLong]:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            yield self._take(chunk[start:end])
            start = end + 1
        self._add(chunk[start:])

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        if not self._too_long and self._size + len(piece) > self._limit:
            head = b""
            for part in (*self._pieces, piece):
                head += part[: _HEAD - len(head)]
                if len(head) >= _HEAD:
                    break
            self._pieces, self._too_long = [head], True  # from here on the line is only counted
        elif not self._too_long:
            self._pieces.append(piece)
        self._size += len(piece)

    def _take(self, last: bytes) -> bytes | TooLong:
        if not self._pieces and not self._too_long and len(last) <= self._limit:
            return last  # the whole line came in one chunk, as most do: nothing to join
        self._add(last)
        line: bytes | TooLong = (
            TooLong(self._pieces[0], self._size) if self._too_long else b"".join(self._pieces)
        )
        self._pieces, self._size, self._too_long = [], 0, False
        return line


class TooLong:
    """A line that was skipped for its length: its first bytes and its size."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head = head
        self.size = size


def _too_long(line: TooLong, limit: int) -> dict[str, Any] | None:
    """For a line too long, an error reply to the request it answered (None: nothing to answer)."""
    found = _ID.search(line.head)
    logger.warning("an upstream line of %d bytes was over the %d-byte limit and dropped", line.size, limit)
    if found is None or b'"method"' in line.head[: found.start()]:
        return None  # a request or notification of the upstream's own, or no id: nothing to answer
    return {
        "jsonrpc": "2.0",
        "id": json.loads(found.group(1)),
        "error": {
            "code": types.INTERNAL_ERROR,
            "message": f"the upstream's answer was {line.size} bytes, over the gateway's limit of "
            f"{limit} ([gateway] max_result_bytes); it was dropped unread",
        },
    }


@asynccontextmanager
async def stdio_transport(
    params: StdioServerParameters,
    *,
    errlog: TextIO,
    max_line: int,
    on_spawn: Callable[[int], None],
    on_wire: Callable[[LeanWire], None] | None = None,
    hurried: Callable[[], bool] = lambda: False,
) -> AsyncIterator[tuple[Any, Any]]:
    """The (read, write) streams of a child run from `params`; `on_spawn(pid)` gets its process group,
    `on_wire` the lean request path on the same pipe (`upstream.wire`).

    `hurried()` true (checked while stopping) skips the wait for the child to leave on its own.
    """
    try:
        process = await anyio.open_process(
            [params.command, *params.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            env=get_default_environment() | (params.env or {}),
            cwd=params.cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:  # uvloop leaves the filename out
        raise FileNotFoundError(exc.errno, exc.strerror, params.command) from exc
    reaper.watch(process.pid)
    on_spawn(process.pid)  # a session leader's pid is its process group's id
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    wire = LeanWire(_sender(stdin))
    if on_wire is not None:
        on_wire(wire)

    routing = _Routing(wire, max_line)
    routing.transport = _compat.take_stdout(stdout, routing.feed, routing.end)

    async def pump() -> None:  # no protocol callback to route from: the pipe read as a stream
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            async for chunk in stdout:
                routing.feed(chunk)
                while routing.paused:
                    await routing.wait()
        routing.end()

    async def read() -> None:
        try:
            async with read_writer:
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    await routing.run(read_writer.send)
        finally:
            wire.close()

    async def write() -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            async with write_reader:
                async for outgoing in write_reader:
                    text = outgoing.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send((text + "\n").encode())
        await read_writer.aclose()  # the child stopped reading: the session sees the end

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        tg.start_soon(write)
        if routing.transport is None:
            tg.start_soon(pump)
        try:
            yield read_stream, write_stream
        finally:
            with anyio.CancelScope(shield=True):
                write_stream.close()
                read_stream.close()
                with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await stdin.aclose()
                await _stop(process, hurried)
                # Descendants that outlived their leader go with the group, then the watchdog forgets it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                reaper.release(process.pid)
            tg.cancel_scope.cancel()


def _sender(stdin: Any) -> Callable[[bytes], Awaitable[None]]:
    """How the lean path writes to the child's stdin: to the pipe at once, waiting only while it is full."""
    writer = _compat.process_stdin_writer(stdin)
    if writer is None:
        return stdin.send  # type: ignore[no-any-return]

    pipe = writer.transport

    async def send(data: bytes) -> None:
        try:
            writer.write(data)
            # `drain` returns at once unless something is left unwritten (the pipe full) or it closed.
            if pipe.get_write_buffer_size() or pipe.is_closing():
                await writer.drain()
        except RuntimeError as exc:  # uvloop's word for a pipe closed under the write
            raise anyio.BrokenResourceError from exc

    return send


class _Routing:
    """The child's stdout routed as it arrives, from the pipe's protocol callback (`feed`): an answer to a
    lean request wakes its caller there and then, a loop turn sooner than a reading task could; every
    other line waits in `held`, in order, for the `read` task (what goes to the SDK's session, progress
    and log lines are awaited), and so does any line behind one held (a line stays held until it has
    been handled), so nothing overtakes a log line or progress said before it. Past `HOLD` bytes held
    the pipe is not read (`paused`) until the task catches up, as a stream reader's buffer limit would
    have it.
    """

    HOLD = 1 << 17

    def __init__(self, wire: LeanWire, limit: int) -> None:
        self._lines = _Lines(limit)
        self._wire = wire
        self._limit = limit
        self.held: collections.deque[tuple[Any, int, int]] = collections.deque()
        """Lines for the `read` task: the parsed message (or why it is none), its size, the bytes it holds."""
        self._held_bytes = 0
        self.paused = False
        self.ended = False
        self.transport: asyncio.ReadTransport | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        try:
            for line in self._lines.feed(chunk):
                held = _arrived(line, self._wire, self._limit, first=not self.held)
                if held is not None:
                    weight = len(line) if isinstance(line, bytes) else _HEAD
                    self.held.append((*held, weight))
                    self._held_bytes += weight
        except Exception:  # never into the pipe's protocol: the connection ends as a reading task's would
            logger.exception("routing an upstream's output failed")
            self.end()
            return
        if self._held_bytes > self.HOLD and not self.paused:
            self.paused = True
            if self.transport is not None:
                with contextlib.suppress(RuntimeError):  # uvloop's word for a pipe already closed
                    self.transport.pause_reading()
        if self.held:
            self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    async def run(self, deliver: Callable[[SessionMessage | Exception], Awaitable[None]]) -> None:
        """Hand each held line in turn to the wire (progress, log lines) or to `deliver` (the SDK's
        session), until the end of the output."""
        while True:
            while not self.held:
                if self.ended:
                    return
                await self.wait()
            try:
                parsed, size, _ = self.held[0]
                message = await _routed(parsed, size, self._wire)
                if message is not None:
                    await deliver(message)
            finally:
                self._done()

    def _done(self) -> None:
        self._held_bytes -= self.held.popleft()[2]
        if self.paused and self._held_bytes <= self.HOLD // 2:
            self.paused = False
            if self.transport is not None:
                with contextlib.suppress(RuntimeError):
                    self.transport.resume_reading()
            self._wake()

    async def wait(self) -> None:
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _arrived(line: bytes | TooLong, wire: LeanWire, limit: int, *, first: bool) -> tuple[Any, int] | None:
    """One line from the child, parsed once: None when it needs nothing more (blank, or, when `first` in
    line, the answer to a lean request, handed to its caller); else what the `read` task gets of it
    (the parsed message and its size, or the error that it is not JSON)."""
    try:
        if isinstance(line, TooLong):
            parsed: Any = _too_long(line, limit)
            if parsed is None:
                return None
            size = UNSIZED
        elif not line or line.isspace():
            return None
        else:
            parsed, size = parse(line), len(line)
    except ValueError as exc:
        logger.warning("an upstream sent a line that is not a JSON-RPC message: %s", str(exc)[:200])
        return exc, UNSIZED
    if first and wire.answered(parsed, size):
        return None
    return parsed, size


async def _routed(parsed: Any, size: int, wire: LeanWire) -> SessionMessage | Exception | None:
    """What the SDK's session gets of one held line: nothing when the lean path took it (`upstream.wire`)."""
    if isinstance(parsed, Exception):
        return parsed
    try:
        if await wire.take(parsed, size=size):
            return None
        return SessionMessage(types.jsonrpc_message_adapter.validate_python(parsed, by_name=False))
    except ValueError as exc:
        logger.warning("an upstream sent a line that is not a JSON-RPC message: %s", str(exc)[:200])
        return exc


async def _stop(process: anyio.abc.Process, hurried: Callable[[], bool]) -> None:
    """`EXIT_GRACE` to leave once its stdin closed, then SIGTERM, then SIGKILL, each to its group.

    In a hurry (already, or while waiting) the wait for it to leave by itself is cut short, and
    SIGKILL follows SIGTERM after `HURRIED_GRACE`.
    """
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
        with anyio.move_on_after(HURRIED_GRACE if hurried() and sig is not None else EXIT_GRACE):
            while process.returncode is None and not (sig is None and hurried()):
                await anyio.sleep(0.01)
        if process.returncode is not None:
            break
    with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await process.aclose()
