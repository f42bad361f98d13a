"""Throughput with a light client: the `... throughput x16, raw client` rows of `--only stdio` and
`--only http`.

The other call rows use the mcp SDK's `Client`, as an agent would. At 16 calls in flight it takes
about a core of its own on these machines, so on two cores the client, the upstream and the gateway
compete for the CPU, and every microsecond of the gateway's comes off the rate. These rows drive the
same servers with a client that costs next to nothing, so the rate is the servers':
  http   16 keep-alive connections, each POSTing a 2026-07-28 `tools/call` as soon as its last one
         was answered (raw HTTP/1.1 on asyncio streams; every answer checked for a result)
  stdio  one child process (the upstream, or `mcpgw serve` in front of it) and its pipes, 16
         2026-07-28 `tools/call` lines in flight, a new one written as each answer line is read

and, in `--only list`, `tools/list` of 500 tools over stdio, one at a time: the SDK's client parses
and validates every tool of an answer, which here takes about as long as the upstream takes to list
them, in both columns of the SDK row.

Both sides are the same processes and tools as the SDK rows (over stdio, started anew for these
rounds). Rounds alternate direct and gateway; the row is the median calls/s of each.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

INFLIGHT = 16
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcpgw-bench-raw", "version": "1"},
}
ARGUMENTS = {"message": "hi"}

Rate = Callable[[int], Awaitable[float]]


def _call(request_id: int, tool: str) -> dict[str, Any]:
    params = {"name": tool, "arguments": ARGUMENTS, "_meta": ENVELOPE}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def _answered(message: Any) -> None:
    """A raw call's answer, checked: a JSON-RPC result that is not a tool error."""
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict) or result.get("isError"):
        raise RuntimeError(f"raw client: not a good answer: {str(message)[:300]}")


class HttpRates:
    """`INFLIGHT` keep-alive connections to one streamable HTTP endpoint, for rounds of raw calls."""

    def __init__(self, port: int, tool: str) -> None:
        self.port, self.tool = port, tool
        body = json.dumps(_call(1, tool)).encode()
        head = (
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
            f"Mcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self._request = head.encode() + body
        self._connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self) -> None:
        for _ in range(INFLIGHT):
            self._connections.append(await asyncio.open_connection("127.0.0.1", self.port))
        await self.rate(INFLIGHT * 4)  # each connection warmed, and each answer checked once

    async def close(self) -> None:
        for _, writer in self._connections:
            writer.close()
        self._connections.clear()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self._request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"raw client: {head[:200]!r}")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        _answered(json.loads(await reader.readexactly(length)))

    async def rate(self, calls: int) -> float:
        """Calls per second over `calls` calls (a share per connection)."""
        share = max(calls // len(self._connections), 1)

        async def run(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
            for _ in range(share):
                await self._one(*connection)

        began = time.perf_counter()
        await asyncio.gather(*(run(c) for c in self._connections))
        return share * len(self._connections) / (time.perf_counter() - began)


class StdioRates:
    """One child process speaking JSON-RPC lines on its pipes, for rounds of raw calls."""

    def __init__(self, command: Sequence[str], tool: str, *, cwd: str, stderr: Any) -> None:
        self.command, self.tool, self.cwd, self.stderr = list(command), tool, cwd, stderr
        self._process: asyncio.subprocess.Process | None = None
        self._next_id = 1

    async def open(self, ready_within: float = 60.0) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.stderr,
            cwd=self.cwd,
            limit=1 << 24,
        )
        deadline = time.monotonic() + ready_within
        while True:  # a gateway answers a call once its upstream is ready: until then, an error
            try:
                await self.rate(1)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        await self.rate(INFLIGHT * 4)

    async def close(self) -> None:
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        self._process = None

    async def request(self, method: str) -> dict[str, Any]:
        """The result of one request of `method` (no params but the envelope), sent alone."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        request_id, self._next_id = self._next_id, self._next_id + 1
        line = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {"_meta": ENVELOPE}}
        process.stdin.write(json.dumps(line).encode() + b"\n")
        await process.stdin.drain()
        while True:
            message = json.loads(await process.stdout.readline())
            if isinstance(message, dict) and message.get("id") == request_id:
                break
        result = message.get("result")
        if not isinstance(result, dict):
            raise RuntimeError(f"raw client: {method} was not answered: {str(message)[:300]}")
        return result

    def _call_line(self, request_id: int) -> bytes:
        return json.dumps(_call(request_id, self.tool)).encode() + b"\n"

    async def rate(self, calls: int) -> float:
        """Calls per second over `calls` calls, `INFLIGHT` of them in flight."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        stdin, stdout = process.stdin, process.stdout
        first = self._next_id
        self._next_id += calls
        sent = answered = 0
        began = time.perf_counter()
        while sent < min(INFLIGHT, calls):
            stdin.write(self._call_line(first + sent))
            sent += 1
        await stdin.drain()
        while answered < calls:
            line = await stdout.readline()
            if not line:
                raise RuntimeError("raw client: the process closed its stdout")
            message = json.loads(line)
            if not isinstance(message, dict) or "id" not in message or "method" in message:
                continue  # a notification, or a request of the server's: not an answer
            _answered(message)
            answered += 1
            if sent < calls:
                stdin.write(self._call_line(first + sent))
                sent += 1
        return calls / (time.perf_counter() - began)


class Client(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


@asynccontextmanager
async def opened(*clients: Client) -> AsyncIterator[None]:
    """`clients` opened (connected, warmed, answers checked), and closed at the end whatever happened."""
    try:
        for client in clients:
            await client.open()
        yield
    finally:
        for client in clients:
            await client.close()


async def alternating(
    direct: Rate, gateway: Rate, rounds: int, calls: int
) -> tuple[list[float], list[float]]:
    """`rounds` rounds of `calls` raw calls each side, direct and gateway alternating (which goes first
    too, round by round); the calls/s of each round."""
    rates: tuple[list[float], list[float]] = ([], [])
    for i in range(rounds):
        order = ((direct, rates[0]), (gateway, rates[1]))
        for rate, out in order if i % 2 == 0 else order[::-1]:
            out.append(await rate(calls))
    return rates
