"""The mcp SDK's message streams over stdio, made of the pipe itself.

Owns: `PipeMessages` (what the SDK's dispatcher reads: the lines of stdin, each offered first to the
lean lane, `leanlane`, and otherwise validated into the SDK's message as its own stdio server does)
and `PipeSends` (what the dispatcher writes: each message dumped as its own stdio server dumps it
and written to stdout at once).

Why not the SDK's `stdio_server`: it puts a reader task and a writer task, each behind a memory
stream, between the pipe and the dispatcher, so every message crossed two extra task hops and was
validated in full even when the lean lane serves it. Here a line is read, parsed once (orjson) and
either served by the lane or handed to the SDK in the same step; an answer is one write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage

from mcpgw.upstream.wire import parse


class ParsedLine(str):
    """A line of stdin whose JSON was parsed already (by its envelope check, `stdio._PipeLines`), so
    `PipeMessages` does not parse it a second time."""

    message: Any

    @classmethod
    def of(cls, line: str, message: Any) -> ParsedLine:
        parsed = cls(line)
        parsed.message = message
        return parsed


class _Closable:
    """What both streams do as async context managers: closing marks them closed."""

    _closed = False

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class PipeMessages(_Closable):
    """The SDK's read stream over stdin: `SessionMessage`s, or the exception a line failed with.

    `lines` yields stdin's lines, envelope-checked (`stdio._PipeLines`); `take` is offered each
    parsed message first and returns True for one it serves itself (never seen by the SDK).
    """

    def __init__(self, lines: AsyncIterator[str], take: Callable[[Any], bool]) -> None:
        self._lines = lines
        self._take = take
        self._closed = False

    async def receive(self) -> SessionMessage | Exception:
        if self._closed:
            raise anyio.ClosedResourceError
        while True:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                raise anyio.EndOfStream from None
            if type(line) is ParsedLine:
                message = line.message
            else:
                try:
                    message = parse(line)
                except (ValueError, RecursionError):
                    message = None  # a blank line: the SDK's own parser has the last word on it
            if message is not None and self._take(message):
                continue
            try:
                return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
            except Exception as exc:  # the SDK's stdio server hands the dispatcher the error, so do we
                return exc

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None


class PipeSends(_Closable):
    """The SDK's write stream over stdout: each message a line, dumped as the SDK's stdio server dumps it."""

    def __init__(self, write: Callable[[bytes], None], drain: Callable[[], Any]) -> None:
        self._write = write
        self._drain = drain
        self._closed = False

    async def send(self, item: SessionMessage, /) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        text = item.message.model_dump_json(by_alias=True, exclude_unset=True)
        self._write(text.encode("utf-8") + b"\n")
        try:
            await self._drain()
        except (ConnectionError, RuntimeError) as exc:  # the client closed stdout's other end
            raise anyio.BrokenResourceError from exc
