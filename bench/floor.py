"""The floor of the benchmark (`bench/run.py --only floor`): what one more process in the path costs
on this machine, before any gateway work, and what a process that parses and rewrites every message
costs, measured as the gateway rows are.

The same client and upstream as `--only stdio` and `--only http`, with a relay in the place of the
gateway, on the same event loop as `mcpgw serve` (uvloop), written as asyncio protocols (each read
handed to the other side's transport in the loop's own callback: no stream objects, no tasks):

  floor stdio         the mcp Client over stdio to `python bench/floor.py stdio UPSTREAM...`, which
                      starts the upstream and copies both pipes, against the upstream reached directly
  floor http          the mcp Client over streamable HTTP to `python bench/floor.py http PORT UP_PORT`,
                      a TCP relay to the HTTP upstream (one upstream connection per client connection)
  floor stdio parsed  the same relays doing the least a gateway must do to each message: every JSON-RPC
  floor http parsed   line (stdio) or HTTP request and answer (httptools, as uvicorn parses) parsed,
                      a `tools/call`'s name looked up and set again, the JSON dumped again (orjson),
                      HTTP heads written anew, an SSE answer's `data:` lines each parsed and dumped
                      as they stream; no checks, no persona, no audit
  skeleton stdio      `mcpgw serve` itself, over stdio and over HTTP, with nothing between its
  skeleton http       transports: a `tools/call` is looked up and sent straight to the upstream's
                      session (`bench/skeleton.py`)

The bare rows are the least any process in between can add here: the extra wake-ups of a hop, the
reads and writes, three busy processes sharing two cores instead of two. The parsed rows are the
least a Python gateway that parses what it forwards can add. The skeleton rows are what mcpgw's own
transports add (its stdio lane, its HTTP front, its upstream wires); what `mcpgw` adds above them is
its governance per call (checks, persona, data rules, audit, metrics).

Run as a script, this file is the relay itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Rewrite = Callable[[bytes], bytes]


# --- what the parsing relays do to a message ---------------------------------------------------------

NAMES = {"echo": "echo"}
"""The parsing relays' name table: a `tools/call`'s name is looked up and set, as a gateway resolves
its namespaced names (the bench's client calls `echo` here, so the table maps it to itself)."""


def rewritten(message: bytes) -> bytes:
    """One JSON-RPC message parsed, a `tools/call`'s name looked up and set, dumped again."""
    import orjson

    decoded = orjson.loads(message)
    if isinstance(decoded, dict) and decoded.get("method") == "tools/call":
        params = decoded.get("params")
        if isinstance(params, dict) and isinstance(name := params.get("name"), str):
            params["name"] = NAMES.get(name, name)
    return orjson.dumps(decoded)


def same(data: bytes) -> bytes:
    return data


# --- stdio -----------------------------------------------------------------------------------------


class _Lines:
    """Bytes in, whole lines out through `rewrite` (each line's newline kept), the rest kept for later;
    blank lines dropped (JSON-RPC lines), or kept (`blank`: SSE, where they end an event)."""

    def __init__(self, rewrite: Rewrite, *, blank: bool = False) -> None:
        self.rewrite = rewrite
        self.blank = blank
        self.rest = b""

    def __call__(self, data: bytes) -> bytes:
        if self.rewrite is same:
            return data
        *lines, self.rest = (self.rest + data).split(b"\n")
        return b"".join(self.rewrite(line) + b"\n" for line in lines if self.blank or line.strip())

    def end(self) -> bytes:
        """What is left at the end of the stream: a last line without its newline."""
        rest, self.rest = self.rest, b""
        return self.rewrite(rest) if rest.strip() else b""


class _Out(asyncio.Protocol):
    """This process's stdout; `closed` once what was written to it has gone out and it is closed."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Child(asyncio.SubprocessProtocol):
    """The upstream: its stdout, through `down`, to this process's stdout; `done` once it has exited
    and its pipes are closed (after the last of its output: `process_exited` may come before it)."""

    def __init__(self, out: asyncio.WriteTransport, down: _Lines, done: asyncio.Future[None]) -> None:
        self.out, self.down, self.done = out, down, done

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1 and (data := self.down(data)):
            self.out.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if last := self.down.end():
            self.out.write(last)
        if not self.done.done():
            self.done.set_result(None)


class _Stdin(asyncio.Protocol):
    """This process's stdin, through `up`, to the upstream's stdin; its end closes the upstream's."""

    def __init__(self, child: asyncio.SubprocessTransport, up: _Lines) -> None:
        self.child, self.up = child, up

    def data_received(self, data: bytes) -> None:
        pipe: Any = self.child.get_pipe_transport(0)  # the child's stdin: a write transport
        if pipe is not None and (data := self.up(data)):
            pipe.write(data)

    def eof_received(self) -> bool:
        pipe: Any = self.child.get_pipe_transport(0)
        if pipe is not None:
            if last := self.up.end():
                pipe.write(last)
            pipe.close()
        return False


async def relay_stdio(argv: list[str], rewrite: Rewrite = same) -> int:
    """Start `argv` and relay this process's stdin to its stdin and its stdout to this stdout, until it
    has exited and all its output is written."""
    loop = asyncio.get_running_loop()
    out, stdout = await loop.connect_write_pipe(_Out, sys.stdout)
    done: asyncio.Future[None] = loop.create_future()
    child, _ = await loop.subprocess_exec(
        lambda: _Child(out, _Lines(rewrite), done),
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    await loop.connect_read_pipe(lambda: _Stdin(child, _Lines(rewrite)), sys.stdin)
    await done
    out.close()  # after what is buffered has been written
    await stdout.closed
    return child.get_returncode() or 0


# --- TCP and HTTP ------------------------------------------------------------------------------------


class _Side(asyncio.Protocol):
    """One connection of a pair: what it reads goes to its peer's transport (held until there is one)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.held: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.send_on(data)

    def send_on(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.held.append(data)

    def joined(self, peer: _Side) -> None:
        self.peer = peer
        held, self.held = self.held, []
        for data in held:
            self.send_on(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


BODILESS = frozenset({204, 304})
"""Answers without a body, or a length for one (as are the interim 1xx ones)."""


class _HttpSide(_Side):
    """A side that parses HTTP/1.1 messages (httptools) and writes each one anew: requests from the
    client (`request=True`), answers from the upstream. A JSON body goes through `rewritten`; an answer
    without a length (an SSE stream, chunked or to the connection's end) is passed on chunk by chunk,
    each of its `data:` lines through `rewritten`. Enough of HTTP for MCP's clients: no HEAD, no upgrade."""

    SKIP = frozenset({b"host", b"content-length", b"connection", b"transfer-encoding", b"date", b"server"})

    def __init__(self, *, request: bool, upstream_port: int = 0) -> None:
        import httptools

        super().__init__()
        self.request = request
        self.upstream_port = upstream_port
        self.parser: Any = (httptools.HttpRequestParser if request else httptools.HttpResponseParser)(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.url = b""
        self.reason = b""
        self.streaming = False
        self.events = _Lines(_event_line, blank=True)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def eof_received(self) -> bool | None:
        if self.streaming:  # an answer delimited by the connection's end: its end, chunked
            if last := self.events.end():
                self.send_on(b"%x\r\n%s\r\n" % (len(last), last))
            self.send_on(b"0\r\n\r\n")
            self.streaming = False
        return None

    def on_message_begin(self) -> None:
        self.headers, self.body, self.url, self.reason, self.streaming = [], [], b"", b"", False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def _bodiless(self) -> bool:
        if self.request:
            return False
        status = self.parser.get_status_code()
        return status < 200 or status in BODILESS

    def on_headers_complete(self) -> None:
        if self.request or self._bodiless():
            return
        if not any(n == b"content-length" for n, _ in self.headers):
            self.streaming = True
            self.events = _Lines(_event_line, blank=True)
            self.send_on(self._head(b"transfer-encoding: chunked\r\n"))

    def on_body(self, body: bytes) -> None:
        if self.streaming:
            if body := self.events(body):
                self.send_on(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.streaming:
            if last := self.events.end():
                self.send_on(b"%x\r\n%s\r\n" % (len(last), last))
            self.send_on(b"0\r\n\r\n")
            self.streaming = False
            return
        body = b"".join(self.body)
        kinds = [v for n, v in self.headers if n == b"content-type"]
        if body and (self.request or (kinds and kinds[0].startswith(b"application/json"))):
            body = rewritten(body)
        framing = b"" if self._bodiless() else b"content-length: %d\r\n" % len(body)
        self.send_on(self._head(framing) + body)

    def _head(self, framing: bytes) -> bytes:
        if self.request:
            first = b"%s %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % (
                self.parser.get_method(),
                self.url,
                self.upstream_port,
            )
        else:
            first = b"HTTP/1.1 %d %s\r\n" % (self.parser.get_status_code(), self.reason)
        fields = b"".join(n + b": " + v + b"\r\n" for n, v in self.headers if n not in self.SKIP)
        return first + fields + framing + b"\r\n"


def _event_line(line: bytes) -> bytes:
    """An SSE line, its `data:` JSON through `rewritten` (other lines, and blank ones, as they were)."""
    text = line.rstrip(b"\r")
    if text.startswith(b"data:") and text[5:].strip():
        return b"data: " + rewritten(text[5:].strip())
    return text


async def relay_tcp(port: int, upstream_port: int, *, parse: bool = False) -> None:
    """Accept on 127.0.0.1:`port`; relay each connection to 127.0.0.1:`upstream_port` on one of its own
    (`parse`: as HTTP, each message parsed and written anew)."""
    loop = asyncio.get_running_loop()
    joining: set[asyncio.Task[None]] = set()

    def side(request: bool) -> _Side:
        return _HttpSide(request=request, upstream_port=upstream_port) if parse else _Side()

    def accepted() -> _Side:
        client = side(True)

        async def join() -> None:
            try:
                _, upstream = await loop.create_connection(lambda: side(False), "127.0.0.1", upstream_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            assert isinstance(upstream, _Side)
            if client.lost:  # the client went while this connected: nothing to relay
                assert upstream.transport is not None
                upstream.transport.close()
                return
            upstream.joined(client)
            client.joined(upstream)

        task = loop.create_task(join())
        joining.add(task)
        task.add_done_callback(joining.discard)
        return client

    server = await loop.create_server(accepted, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    import uvloop  # the gateway's own loop (`mcpgw serve`), so the floor is the gateway's floor

    parse = argv[:1] == ["--parse"]
    argv = argv[1:] if parse else argv
    if argv[:1] == ["stdio"] and len(argv) > 1:
        return uvloop.run(relay_stdio(argv[1:], rewritten if parse else same))
    if argv[:1] == ["http"] and len(argv) in (3, 4):  # a fourth: the run's token, for finding it
        uvloop.run(relay_tcp(int(argv[1]), int(argv[2]), parse=parse))
        return 0
    print(
        "usage: floor.py [--parse] stdio COMMAND... | floor.py [--parse] http PORT UP_PORT [TAG]",
        file=sys.stderr,
    )
    return 2


# --- the section -----------------------------------------------------------------------------------

RELAY = Path(__file__).resolve()
SKELETON_SCRIPT = RELAY.with_name("skeleton.py")


async def bench_floor(h: Any, s: Any, tmp: Path, results: Any, errlog: IO[str]) -> None:
    """`floor stdio` and `floor http` rows, bare and parsed: the upstream through each relay against it
    directly (one direct client per transport, measured against each relay in turn)."""
    bare = [str(RELAY), "stdio", h.PYTHON, *h.upstream_args("floor-relayed")]
    parsed = [str(RELAY), "--parse", "stdio", h.PYTHON, *h.upstream_args("floor-parsed")]
    stdio_registry = h.write_registry(tmp / "skeleton-stdio.toml", {"up": h.stdio_entry("floor-skeleton")})
    async with (
        h.stdio_client_of(h.upstream_args("floor-direct"), s.mode, errlog) as direct,
        h.stdio_client_of(bare, s.mode, errlog) as relayed,
        h.stdio_client_of(parsed, s.mode, errlog) as parsing,
        h.stdio_client_of(_skeleton(h, stdio_registry), s.mode, errlog) as skeleton,
    ):
        await _measured(h, s, results, "floor stdio", direct, relayed, BARE)
        await _measured(h, s, results, "floor stdio parsed", direct, parsing, PARSED)
        await _measured(h, s, results, "skeleton stdio", direct, skeleton, SKELETON, name="up__echo")
    h.reap(h.TOKEN + "-floor")
    h.reap(str(stdio_registry))

    up_port, bare_port, parsed_port = h.free_port(), h.free_port(), h.free_port()
    up_cmd = [h.PYTHON, *h.upstream_args("floor-http", "--http", str(up_port))]
    relay = [h.PYTHON, str(RELAY)]
    bare_cmd = [*relay, "http", str(bare_port), str(up_port), f"{h.TOKEN}-floor-relay"]
    parsed_cmd = [*relay, "--parse", "http", str(parsed_port), str(up_port), f"{h.TOKEN}-floor-parsed"]
    skeleton_port = h.free_port()
    http_registry = h.write_registry(
        tmp / "skeleton-http.toml", {"up": {"url": f"http://127.0.0.1:{up_port}/mcp"}}
    )
    http_args = ("--transport", "http", "--host", "127.0.0.1", "--port", str(skeleton_port))
    skeleton_cmd = [h.PYTHON, *_skeleton(h, http_registry, *http_args)]
    with (
        h.background(up_cmd, tmp / "floor-upstream.log", port=up_port),
        h.background(bare_cmd, tmp / "floor-relay.log", port=bare_port),
        h.background(parsed_cmd, tmp / "floor-parsed.log", port=parsed_port),
        h.background(skeleton_cmd, tmp / "floor-skeleton.log", port=skeleton_port),
    ):
        async with (
            h.http_client_of(f"http://127.0.0.1:{up_port}/mcp", s.mode) as direct,
            h.http_client_of(f"http://127.0.0.1:{bare_port}/mcp", s.mode) as relayed,
            h.http_client_of(f"http://127.0.0.1:{parsed_port}/mcp", s.mode) as parsing,
            h.http_client_of(f"http://127.0.0.1:{skeleton_port}/mcp", s.mode) as skeleton,
        ):
            await _measured(h, s, results, "floor http", direct, relayed, BARE)
            await _measured(h, s, results, "floor http parsed", direct, parsing, PARSED)
            await _measured(h, s, results, "skeleton http", direct, skeleton, SKELETON, name="up__echo")
    h.reap(h.TOKEN + "-floor")
    h.reap(str(http_registry))


def _skeleton(h: Any, registry: Path, *extra: str) -> list[str]:
    """`mcpgw serve` on `registry` as `bench/skeleton.py` runs it: its transports, nothing between."""
    return [str(SKELETON_SCRIPT), *h.gateway_args(registry, *extra)[2:]]


BARE = "the 'gateway' column is a bare relay (bench/floor.py): the least one more process adds here"
PARSED = (
    "the 'gateway' column is a relay that parses and rewrites every message (bench/floor.py): the least"
    " a Python gateway that parses what it forwards adds here"
)


SKELETON = (
    "the 'gateway' column is mcpgw's transports with nothing between them (bench/skeleton.py): what its"
    " lanes and upstream wires add here, before any of its governance"
)


async def _measured(
    h: Any, s: Any, results: Any, label: str, direct: Any, relayed: Any, note: str, *, name: str = "echo"
) -> None:
    """The upstream through `relayed` (which calls the tool `name`) against `direct`, measured as the
    gateway's rows are, in the same rows (`call_rows`), `relayed` in the gateway column (information:
    no target)."""
    await h.check_echo(direct, "echo")
    await h.check_echo(relayed, name)
    d_call, r_call = h.echo_call(direct, "echo"), h.echo_call(relayed, name)
    d_lat, r_lat = await h.latencies(d_call, r_call, s.calls, s.warmup)
    tp = await h.throughputs(d_call, r_call, s.rounds, s.per_round)
    h.call_rows(results, label, d_lat, r_lat, tp, note=note)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
