"""The floor of the benchmark (`bench/run.py --only floor`): what one more process in the path costs
on this machine, before any gateway work, measured as the gateway rows are.

The same client and upstream as `--only stdio` and `--only http`, with a bare relay in the place of
the gateway: a process that copies bytes both ways and does nothing else (no parsing, no names
rewritten, no audit), on the same event loop as `mcpgw serve` (uvloop). The ratios it prints are the
least any process in between can add here: the extra wake-ups of a hop, the reads and writes, and
three busy processes sharing two cores instead of two. What `mcpgw` adds above them is its own work.

  floor stdio  the mcp Client over stdio to `python bench/floor.py stdio UPSTREAM...`, which starts
               the upstream and relays both pipes, against the upstream reached directly
  floor http   the mcp Client over streamable HTTP to `python bench/floor.py http PORT UP_PORT`, a TCP
               relay to the HTTP upstream (one upstream connection per client connection), against
               the upstream reached directly

Run as a script, this file is the relay itself.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 16


# --- the relays ------------------------------------------------------------------------------------


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from `reader` to `writer` as they come, until the reader's end (then the writer's)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def relay_stdio(argv: list[str]) -> int:
    """Start `argv` and relay this process's stdin to its stdin and its stdout to this stdout."""
    loop = asyncio.get_running_loop()
    child = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    stdin = asyncio.StreamReader(limit=CHUNK)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    stdout = asyncio.StreamWriter(transport, protocol, None, loop)
    down = asyncio.create_task(_pump(child.stdout, stdout))
    await _pump(stdin, child.stdin)  # the client closed its end: so does the child's
    await down
    return await child.wait()


async def relay_tcp(port: int, upstream_port: int) -> None:
    """Accept on 127.0.0.1:`port`; relay each connection to 127.0.0.1:`upstream_port` on one of its own."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    import uvloop  # the gateway's own loop (`mcpgw serve`), so the floor is the gateway's floor

    if argv[:1] == ["stdio"] and len(argv) > 1:
        return uvloop.run(relay_stdio(argv[1:]))
    if argv[:1] == ["http"] and len(argv) in (3, 4):  # a fourth: the run's token, for finding it
        uvloop.run(relay_tcp(int(argv[1]), int(argv[2])))
        return 0
    print("usage: floor.py stdio COMMAND... | floor.py http PORT UPSTREAM_PORT [TAG]", file=sys.stderr)
    return 2


# --- the section -----------------------------------------------------------------------------------

RELAY = Path(__file__).resolve()


async def bench_floor(h: Any, s: Any, tmp: Path, results: Any, errlog: IO[str]) -> None:
    """`floor stdio` and `floor http` rows: the upstream through a bare relay against it directly."""
    relay_args = [str(RELAY), "stdio", h.PYTHON, *h.upstream_args("floor-relayed")]
    async with (
        h.stdio_client_of(h.upstream_args("floor-direct"), s.mode, errlog) as direct,
        h.stdio_client_of(relay_args, s.mode, errlog) as relayed,
    ):
        await _measured(h, s, results, "floor stdio", direct, relayed)
    h.reap(h.TOKEN + "-floor")

    up_port, relay_port = h.free_port(), h.free_port()
    up_cmd = [h.PYTHON, *h.upstream_args("floor-http", "--http", str(up_port))]
    relay_cmd = [h.PYTHON, str(RELAY), "http", str(relay_port), str(up_port), f"{h.TOKEN}-floor-relay"]
    with (
        h.background(up_cmd, tmp / "floor-upstream.log", port=up_port),
        h.background(relay_cmd, tmp / "floor-relay.log", port=relay_port),
    ):
        async with (
            h.http_client_of(f"http://127.0.0.1:{up_port}/mcp", s.mode) as direct,
            h.http_client_of(f"http://127.0.0.1:{relay_port}/mcp", s.mode) as relayed,
        ):
            await _measured(h, s, results, "floor http", direct, relayed)
    h.reap(h.TOKEN + "-floor")


async def _measured(h: Any, s: Any, results: Any, label: str, direct: Any, relayed: Any) -> None:
    """The upstream through `relayed` against `direct`, measured as the gateway's rows are, in the same
    rows (`call_rows`), the relay in the gateway column (information: no target)."""
    await h.check_echo(direct, "echo")
    await h.check_echo(relayed, "echo")
    d_call, r_call = h.echo_call(direct, "echo"), h.echo_call(relayed, "echo")
    d_lat, r_lat = await h.latencies(d_call, r_call, s.calls, s.warmup)
    tp = await h.throughputs(d_call, r_call, s.rounds, s.per_round)
    note = "the 'gateway' column is a bare relay (bench/floor.py): the least one more process adds here"
    h.call_rows(results, label, d_lat, r_lat, tp, note=note)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
