"""In-process microbench of the gateway's own CPU per forwarded stdio call (the lean lane and below).

Serves the gateway as `mcpgw serve` does over stdio (`leanlane.serve`, the registry's upstream the
test upstream over a real stdio pipe), lets the mcp `Client` do the handshake and one call, then
writes that call's JSON-RPC line again and again straight into the lane (no client in the loop) and
reads the answer line back. Prints this process's CPU per call (the gateway, the audit writer thread
and this small driver; the upstream is another process) for three rounds.

    PYTHONPATH=src .venv/bin/python bench/lane.py               # N=3000 calls a round, audit on
    AUDIT=0 N=2000 PYTHONPATH=src .venv/bin/python bench/lane.py
    PROF=tottime PYTHONPATH=src .venv/bin/python bench/lane.py  # cProfile of the last round
    CRIT=1 PYTHONPATH=src .venv/bin/python bench/lane.py        # the critical path's share, too

`CRIT=1` also prints the gateway thread's CPU (`time.thread_time`) on the critical path of a call:
from the request line read to the upstream's request written, and from the upstream's answer line
read to the client's answer written; the rest of the thread's CPU per call runs off that path (the
bookkeeping after the answer, the event loop, this driver).

The profile counts this thread's CPU (`time.thread_time`), not wall time: on a busy machine a wall
clock charges a pipe write with the upstream that preempts the gateway on being woken.

Run it on two commits back to back: the difference is what the change saved per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import math
import os
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import mcp_types as types
from mcp import Client
from mcp.shared.message import SessionMessage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mcpgw.audit import AuditLog  # noqa: E402
from mcpgw.server import leanlane  # noqa: E402
from mcpgw.server.handlers import build_server  # noqa: E402
from mcpgw.server.notify import notification_options  # noqa: E402
from mcpgw.upstream import stdio as upstream_stdio  # noqa: E402
from parity import registry, served  # noqa: E402

N = int(os.environ.get("N", "3000"))
AUDIT = os.environ.get("AUDIT", "1") == "1"
MODE = os.environ.get("MODE", "auto")
PROF = os.environ.get("PROF")
CRIT = os.environ.get("CRIT") == "1"


async def main() -> None:
    log = AuditLog(Path(tempfile.mkdtemp()) / "audit.db").start() if AUDIT else None
    upstream = {"command": sys.executable, "args": [str(ROOT / "tests" / "servers" / "upstream.py")]}
    async with served(registry({"up": upstream}), {}, audit=log) as gateway:
        server, _ = build_server(gateway)
        init = server.create_initialization_options(notification_options())
        to_client, client_read = anyio.create_memory_object_stream[Any](math.inf)
        client_write, from_client = anyio.create_memory_object_stream[SessionMessage](math.inf)
        queue: asyncio.Queue[str] = asyncio.Queue()
        calls: list[str] = []
        waiting: list[asyncio.Event | None] = [None]
        answer: list[bytes] = [b""]

        marks: dict[str, float] = {}  # CRIT=1: thread CPU at each step of the call in flight

        async def lines() -> AsyncIterator[str]:
            while True:
                line = await queue.get()
                marks["read"] = time.thread_time()
                yield line

        async def carry() -> None:  # the client's messages, as the lines a stdio client writes
            async for message in from_client:
                text = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                if '"tools/call"' in text:
                    calls.append(text)
                queue.put_nowait(text)

        def write(line: bytes) -> None:  # the gateway's lines: to the client, or to the loop below
            event = waiting[0]
            if event is not None:
                marks["answered"] = time.thread_time()
                waiting[0], answer[0] = None, line
                event.set()
                return
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                to_client.send_nowait(SessionMessage(types.jsonrpc_message_adapter.validate_json(line)))

        async def drain() -> None:
            await anyio.lowlevel.checkpoint()

        @contextlib.asynccontextmanager
        async def transport() -> AsyncIterator[Any]:
            yield client_read, client_write

        async with anyio.create_task_group() as tg:
            tg.start_soon(carry)
            tg.start_soon(partial(leanlane.serve, server, lines(), write=write, drain=drain, options=init))
            async with Client(transport(), mode=MODE, cache=None) as client:
                await client.call_tool("up__echo", {"message": "hi"})
                call = json.loads(calls[-1])
                if CRIT:
                    _mark_upstream(gateway.upstreams["up"]._session._wire, marks)

                async def one(request_id: int) -> None:
                    call["id"] = request_id
                    event = asyncio.Event()
                    waiting[0] = event
                    queue.put_nowait(json.dumps(call))
                    await event.wait()
                    assert b'"hi"' in answer[0], answer[0]

                for i in range(300):  # warm-up
                    await one(1_000_000 + i)
                rounds = []
                legs = [0.0, 0.0, 0.0]  # CPU to the upstream, back to the client, all of the thread's
                for r in range(3):
                    profile = cProfile.Profile(time.thread_time) if PROF and r == 2 else None
                    cpu, wall, own = time.process_time(), time.perf_counter(), time.thread_time()
                    if profile is not None:
                        profile.enable()
                    for i in range(N):
                        await one(2_000_000 + r * N + i)
                        if CRIT:
                            legs[0] += marks["sent"] - marks["read"]
                            legs[1] += marks["answered"] - marks["answer"]
                    legs[2] += time.thread_time() - own
                    if profile is not None:
                        profile.disable()
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    rounds.append(f"{cpu / N * 1e6:.0f} us CPU ({wall / N * 1e6:.0f} us wall)")
                print(f"audit {'on' if AUDIT else 'off'}, {N} calls a round:", "; ".join(rounds))
                if CRIT:
                    up, back, own = (leg / (3 * N) * 1e6 for leg in legs)
                    print(
                        f"critical path (gateway thread CPU per call): {up:.0f} us request line to upstream "
                        f"request, {back:.0f} us upstream answer to client answer; {own - up - back:.0f} us "
                        f"of the thread's {own:.0f} us off that path"
                    )
                if profile is not None:
                    stats = pstats.Stats(profile).sort_stats(PROF)
                    stats.print_stats(int(os.environ.get("LINES", "60")))
                    if os.environ.get("CALLERS"):
                        stats.print_callers(os.environ["CALLERS"])
            tg.cancel_scope.cancel()
    if log is not None:
        log.close()


def _mark_upstream(wire: Any, marks: dict[str, float]) -> None:
    """CRIT=1: note the thread CPU when the upstream's request is written and its answer line is read."""
    write, arrived = wire._write, upstream_stdio._arrived

    async def written(data: bytes) -> None:
        marks["sent"] = time.thread_time()
        await write(data)

    def read(line: Any, *args: Any, **kwargs: Any) -> Any:
        marks["answer"] = time.thread_time()
        return arrived(line, *args, **kwargs)

    wire._write = written
    upstream_stdio._arrived = read


if __name__ == "__main__":
    anyio.run(main)
