"""mcpgw served over stdio: one client on stdin and stdout.

Owns: `serve_stdio` (its registry reloaded live, see `reload`), and the pipe
ends it serves over: stdin read through the event loop, so a signal can cancel
the read (`_PipeLines`; each line's envelope is checked first, see `envelope`),
and stdout written through the event loop (`_PipeWriter`). Either falls back to
the SDK's own reader or writer when its descriptor is not a pipe or a socket.
Over pipes, the forwarded requests are served off them by the lean lane
(`leanlane`), the rest by the SDK over the same pipes (`pipestreams`). What the pre-server
read and answered before the SDK was imported is handed over first (`prestarted`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from mcpgw.core.gateway import Gateway
from mcpgw.prestart.preserver import is_pipe
from mcpgw.server import leanlane, scrape
from mcpgw.server.envelope import UNPARSED, checked, too_large
from mcpgw.server.handlers import build_server
from mcpgw.server.lifecycle import check_personas, stop_on_signals
from mcpgw.server.notify import notification_options
from mcpgw.server.pipestreams import ParsedLine
from mcpgw.server.prestarted import EarlyStart, KeptWriter
from mcpgw.server.reload import Reloader


class _PipeLines:
    """Lines of stdin read through the event loop, so a signal can cancel the read.

    The SDK's stdio server reads stdin in a worker thread that cancellation
    cannot interrupt: on SIGTERM the gateway would wait for the client's next
    line before it could stop its upstreams. Lines that are not JSON, or not a
    JSON-RPC 2.0 envelope, are answered here with -32700 / -32600 (the SDK
    would drop them silently, leaving a client waiting for an answer).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        reply: Callable[[dict[str, Any]], None] | None = None,
        *,
        limit: int,
    ) -> None:
        self._reader = reader
        self.reply = reply
        self._limit = limit

    async def _rest_of_long_line(self) -> bytes | None:
        """Past a line over the limit: its rest read and dropped (never buffered whole). None, or
        `b""` when the input ended where the line did."""
        while True:
            try:
                await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                return None if exc.partial else b""
            except asyncio.LimitOverrunError as exc:
                # Drop what is buffered so far and keep reading until the line ends.
                await self._reader.readexactly(exc.consumed)
                continue
            return None

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            try:  # the usual line read here, not in a coroutine of its own: one fewer per line
                raw: bytes | None = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                raw = exc.partial
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)  # dropped: the line is over the limit
                raw = await self._rest_of_long_line()
            if raw is None:
                if self.reply is not None:
                    self.reply(too_large(self._limit))
                continue
            if not raw:
                raise StopAsyncIteration
            line = raw.decode("utf-8", errors="replace")
            if self.reply is None:
                return line
            message, problem = checked(line)
            if problem is None:
                return line if message is UNPARSED else ParsedLine.of(line, message)
            self.reply(problem)


class _PipeWriter:
    """stdout written through the event loop: no worker-thread hop per message (as the SDK does)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, data: str) -> None:
        self._writer.write(data.encode("utf-8"))

    def write_line(self, line: bytes) -> None:
        self._writer.write(line)

    async def flush(self) -> None:
        await self._writer.drain()

    def send_now(self, message: dict[str, Any]) -> None:
        """Write one whole line (the event loop's transport keeps whole writes whole)."""
        self._writer.write((json.dumps(message) + "\n").encode("utf-8"))


async def _event_loop_stdout(*, keep: Callable[[bytes], bytes] | None = None) -> _PipeWriter | None:
    """`keep`: what of each write goes out (see `prestarted.EarlyStart.outgoing`)."""
    loop = asyncio.get_running_loop()
    if not is_pipe(sys.stdout.fileno()):
        return None
    try:
        stdout = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    except (OSError, ValueError):
        return None
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return _PipeWriter(writer if keep is None else KeptWriter(writer, keep))  # type: ignore[arg-type]


async def _cancellable_stdin(limit: int, *, replay: bytes = b"") -> _PipeLines | None:
    """`replay`: bytes read before (by the pre-server), read first."""
    loop = asyncio.get_running_loop()
    if not is_pipe(sys.stdin.fileno()):
        return None
    reader = asyncio.StreamReader(limit=limit)
    reader.feed_data(replay)
    try:
        stdin = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    except (OSError, ValueError):
        return None  # a regular file or no stdin at all: the SDK's reader copes with those
    return _PipeLines(reader, limit=limit)


async def serve_stdio(
    gateway: Gateway, persona: str | None = None, *, registry_path: Path | None = None
) -> None:
    """Serve one client over stdin/stdout until it closes stdin or a signal arrives.

    `registry_path`: the file the gateway was built from, reloaded live (see `server.reload`).
    """
    from mcp.server.stdio import stdio_server

    gateway.resolve_persona(persona)
    server, announcer = build_server(gateway, persona=persona)
    early = EarlyStart.for_stdio(gateway, persona, registry_path=registry_path, announce=announcer)
    stdin = await _cancellable_stdin(
        gateway.registry.gateway.max_request_bytes, replay=early.replay if early else b""
    )
    stdout = await _event_loop_stdout(keep=early.outgoing if early else None)
    if stdin is not None and stdout is not None:
        stdin.reply = stdout.send_now
        # The channel now lives on duplicated descriptors; stray reads of fd 0 see EOF and stray
        # writes to fd 1 land in the log, as the SDK's own stdio server arranges.
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(sys.stderr.fileno(), 1)
    reloader = Reloader(gateway, registry_path, persona=persona) if registry_path is not None else None
    if gateway.metrics is not None:
        gateway.metrics.track_sessions("stdio", lambda: 1)
    async with scrape.listening(gateway), gateway.running(), anyio.create_task_group() as tg:

        def stop() -> None:
            if reloader is not None:
                reloader.close()
            tg.cancel_scope.cancel()

        tg.start_soon(partial(stop_on_signals, reload=reloader.request if reloader else None), gateway, stop)
        tg.start_soon(check_personas, gateway)
        if reloader is not None:
            tg.start_soon(reloader.run)
        if early is not None:
            tg.start_soon(early.run)
        options = server.create_initialization_options(notification_options())
        if stdin is not None and stdout is not None:
            lines = early.tap(stdin) if early is not None else stdin
            # The pipe itself as the SDK's streams, and the forwarded requests served off it (`leanlane`).
            await leanlane.serve(server, lines, write=stdout.write_line, drain=stdout.flush, options=options)
        else:
            async with stdio_server(stdin=stdin, stdout=stdout) as (read, write):  # type: ignore[arg-type]
                await server.run(read, write, options)
        gateway.hurry()  # stdin closed: the client's grace (2 s) has begun
        stop()
