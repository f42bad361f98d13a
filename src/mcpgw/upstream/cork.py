"""One write per HTTP request to an upstream: a request's head held back until its body (or the first
read) goes out with it.

Owns: `CorkedBackend`, the network backend of an upstream's pooled HTTP client (installed by
`upstream.transports`), and the stream it hands out.

Why: httpcore writes a request's head and its body in two socket writes, each after a yield to the
event loop. Over loopback or a LAN the upstream wakes for the head, finds no body yet and sleeps
again, then wakes for the body: two wake-ups of the upstream (and, on a busy machine, the gateway
preempted at the first write while the upstream runs) where one would do. Profiled over HTTP, the
head's write was a third of the gateway's samples. Holding the head and sending it with whatever
comes next costs nothing: a request's body follows its head at once, and a request without one is
followed by a read, which flushes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from httpcore2 import AsyncNetworkBackend, AsyncNetworkStream

HEAD_END = b"\r\n\r\n"
HOLD_MAX = 64 * 1024
"""Bytes held at most: a bigger write goes out at once (with anything held)."""


class CorkedStream(AsyncNetworkStream):
    """A connection whose writes ending a request's head wait for the next write or read."""

    def __init__(self, inner: AsyncNetworkStream) -> None:
        self._inner = inner
        self._held = b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._held:
            buffer, self._held = self._held + buffer, b""
        if buffer.endswith(HEAD_END) and len(buffer) <= HOLD_MAX:
            self._held = buffer
            return
        await self._inner.write(buffer, timeout)

    async def _flush(self, timeout: float | None) -> None:
        if self._held:
            held, self._held = self._held, b""
            await self._inner.write(held, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush(timeout)
        return await self._inner.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._held = b""
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        await self._flush(timeout)
        return CorkedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class CorkedBackend(AsyncNetworkBackend):
    """Connects as `inner` does; every connection is a `CorkedStream`."""

    def __init__(self, inner: AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        return CorkedStream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> AsyncNetworkStream:
        return CorkedStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
