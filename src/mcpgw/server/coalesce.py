"""One write per HTTP answer: what the gateway's HTTP server writes in one turn of the event loop goes
to the socket as one write.

Owns: `Coalescing`, the transport every HTTP connection's protocol writes through
(`_compat.http_protocol` puts it in place).

Why: uvicorn writes an answer's status line and headers, then its body, as two writes. The client
wakes for the head, finds no body, and sleeps again until the second write: two wake-ups per answer
(and, on a busy machine, the gateway preempted at the first). Profiled over HTTP, those two writes
were a tenth of the gateway's samples. The writes of one answer happen in one turn of the loop, so
joining what was written in a turn costs no latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class Coalescing:
    """An asyncio transport whose writes within one turn of the loop go out together, or sooner: a
    write that follows another of the same turn sends both at once.

    An answer is two writes (its head, then its body) in one turn; sent on the second, it does not
    wait for the rest of the turn: the request's task unwinding its ASGI layers and uvicorn's own
    bookkeeping after the body, then a pass of the event loop's selector. A write left on its own
    (a head whose body comes later, a stream's next frame) goes at the end of the turn, as before."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self._inner = inner
        self._parts: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._parts:
            parts, self._parts = self._parts, []
            parts.append(bytes(data))
            if not self._inner.is_closing():
                self._inner.write(b"".join(parts))
            return
        self._parts.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for line in lines:
            self.write(line)

    def _flush(self) -> None:
        self._scheduled = False
        parts, self._parts = self._parts, []
        if parts and not self._inner.is_closing():
            self._inner.write(b"".join(parts))

    def close(self) -> None:
        self._flush()  # what was written before the close still goes, as with the transport itself
        self._inner.close()

    def abort(self) -> None:
        self._parts = []
        self._inner.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
