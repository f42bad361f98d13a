"""Start-up and memory sections of the benchmark (`bench/run.py --only start --only rss`), the peers'
columns (`--only peers`) and the CPU profile mode (`--profile SECTION`).

The helpers (registries, clients, process lookup, `Row`) are `bench/run.py`'s, handed in as `h`.

  start  time to the first tools/list through the gateway with 10 upstreams, against the same 10
         upstreams started directly in parallel (the slowest one's list)           <= 1.3x
         the same with the catalog and the opening answers remembered from the last run
         (`servers.catalog.json`, `servers.answers.json`), whatever the upstreams do (10 real
         ones, started once the full server has taken over from the pre-server)    <= 500 ms
  rss    the gateway's RSS with 10 upstreams connected                             <= 80 MiB
         its growth over 10,000 calls (after 1,000 to warm up)                     <= 5 MiB
  peers  the same client through fastmcp's proxy (`fastmcp.server.create_proxy`) and through mcpgw,
         beside the upstream reached directly: stdio call p50, tools/list over 10 upstreams x 50
         tools, start to the first list with 10 upstreams
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import anyio
from mcp import Client

import peer_gateways  # bench/peer_gateways.py: mcp-hub and ContextForge, when installed

PEER_FASTMCP = Path(__file__).resolve().parent / "peer_fastmcp.py"
MCP_PROXY = Path(__file__).resolve().parent / ".peers" / "venv" / "bin" / "mcp-proxy"
"""sparfenyuk/mcp-proxy, a stdio-to-HTTP bridge, in a venv of its own (it pins an older mcp SDK):
`python -m venv bench/.peers/venv && bench/.peers/venv/bin/pip install mcp-proxy`."""
SUPERGATEWAY = Path(__file__).resolve().parent / ".peers" / "node" / "node_modules" / ".bin" / "supergateway"
"""supercorp-ai/supergateway, a stdio-to-HTTP bridge on Node:
`npm install --prefix bench/.peers/node supergateway`."""
START_UPSTREAMS = 10
PEER_TOOLS = 50
GROWTH_CALLS = 10_000


# --- start ----------------------------------------------------------------------------------------


def _upstreams(h: Any, tag: str, *extra: str) -> dict[str, dict[str, Any]]:
    return {f"u{i}": h.stdio_entry(f"{tag}-{i}", *extra) for i in range(START_UPSTREAMS)}


async def _first_list(
    h: Any, args: list[str], mode: str, errlog: IO[str], *, cpu_of: Path | None = None
) -> tuple[float, int, float | None]:
    """Seconds from spawning `python ARGS` to its first tools/list answer, how many tools it had, and
    (with `cpu_of`, the gateway's registry) the CPU seconds the gateway process had used by then."""
    started = time.perf_counter()
    async with h.stdio_client_of(args, mode, errlog) as client:
        tools = await client.list_tools()
        elapsed = time.perf_counter() - started
        cpu = h.cpu_seconds([h.find_gateway_pid(cpu_of)]) if cpu_of is not None else None
        return elapsed, len(tools.tools), cpu


async def _parallel_direct(h: Any, tag: str, mode: str, errlog: IO[str]) -> tuple[float, int]:
    """The same 10 upstreams started directly, each by its own client, all at once: until the last lists."""
    started = time.perf_counter()
    counts: list[int] = []

    async def one(i: int) -> None:
        async with h.stdio_client_of(h.upstream_args(f"{tag}-{i}"), mode, errlog) as client:
            counts.append(len((await client.list_tools()).tools))

    async with anyio.create_task_group() as tg:
        for i in range(START_UPSTREAMS):
            tg.start_soon(one, i)
    return time.perf_counter() - started, sum(counts)


async def bench_start(h: Any, s: Any, tmp: Path, results: Any, errlog: IO[str]) -> None:
    """Cold start to the first list: gateway vs the same upstreams in parallel; then from memory."""
    direct: list[float] = []
    gateway: list[float] = []
    for rep in range(s.cold_reps + 1):  # rep 0 warms the page cache and bytecode, untimed
        for kind in ("d", "g") if rep % 2 else ("g", "d"):
            tag = f"{h.TOKEN}-start{rep}{kind}"
            if kind == "d":
                elapsed, direct_count = await _parallel_direct(h, f"start{rep}{kind}", s.mode, errlog)
                (direct if rep else []).append(elapsed)
            else:
                config = h.write_registry(tmp / f"start{rep}.toml", _upstreams(h, f"start{rep}{kind}"))
                config.write_text(config.read_text() + "\n[gateway]\nremember_catalog = false\n")
                elapsed, count, _ = await _first_list(h, h.gateway_args(config), s.mode, errlog)
                (gateway if rep else []).append(elapsed)
                h.reap(str(config))
            h.reap(tag)
    if count != direct_count:
        raise RuntimeError(f"the gateway listed {count} tools, the upstreams directly {direct_count}")
    results.add(
        h.Row(
            f"start to tools/list, {START_UPSTREAMS} upstreams (direct: the same, in parallel)",
            "ms",
            statistics.median(direct) * 1000,
            statistics.median(gateway) * 1000,
            "<= 1.3x",
            note=f"medians of {s.cold_reps}; direct {[round(x * 1000) for x in direct]} ms (the slowest of "
            f"{START_UPSTREAMS} started at once), gateway {[round(x * 1000) for x in gateway]} ms",
            samples={"direct_ms": [x * 1000 for x in direct], "gateway_ms": [x * 1000 for x in gateway]},
        )
    )
    # From memory: one run writes servers.catalog.json and servers.answers.json; each next start lists
    # from them at once.
    config = h.write_registry(tmp / "remembered.toml", _upstreams(h, "remembered"))
    remembered: list[float] = []
    cpu: list[float] = []
    for rep in range(s.cold_reps + 1):
        elapsed, listed, used = await _first_list(h, h.gateway_args(config), s.mode, errlog, cpu_of=config)
        if rep and listed != count:
            raise RuntimeError(f"the gateway listed {listed} tools from memory, {count} live")
        if rep:
            remembered.append(elapsed)
            cpu.append(used or 0.0)
        h.reap(str(config))
        h.reap(f"{h.TOKEN}-remembered")
    results.add(
        h.Row(
            f"start to tools/list from the remembered catalog, {START_UPSTREAMS} upstreams starting",
            "ms",
            None,
            statistics.median(remembered) * 1000,
            "<= 500 ms",
            note=f"medians of {s.cold_reps}: {[round(x * 1000) for x in remembered]} ms (answered before the "
            f"mcp SDK is imported; the upstreams start after, once the full server is up); "
            f"the gateway's own CPU by then: "
            f"{[round(x * 1000) for x in cpu]} ms, the figure a loaded machine does not move",
            samples={"gateway_ms": [x * 1000 for x in remembered], "gateway_cpu_ms": [x * 1000 for x in cpu]},
        )
    )


# --- rss ------------------------------------------------------------------------------------------


async def bench_rss(h: Any, s: Any, tmp: Path, results: Any, errlog: IO[str]) -> None:
    """The gateway's RSS with 10 upstreams connected, and its growth over 10,000 calls."""
    config = h.write_registry(tmp / "rss.toml", _upstreams(h, "rss"))
    config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    calls = GROWTH_CALLS if s.calls >= 100 else GROWTH_CALLS // 5
    async with h.stdio_client_of(h.gateway_args(config), s.mode, errlog) as client:
        await h.check_echo(client, "u0__echo")
        pid = h.find_gateway_pid(config)
        rounds = [h.echo_call(client, f"u{i}__echo") for i in range(START_UPSTREAMS)]
        turn = 0

        async def call() -> None:
            nonlocal turn
            turn += 1
            await rounds[turn % START_UPSTREAMS]()

        await h.burst(call, 1000, h.INFLIGHT)
        before = h.rss_mib(pid)
        await h.burst(call, calls, h.INFLIGHT)
        after = h.rss_mib(pid)
        upstream = h.rss_mib(h.the_upstream("rss-0"))
    results.add(
        h.Row(
            f"gateway RSS, {START_UPSTREAMS} upstreams connected",
            "MiB",
            None,
            before,
            "<= 80 MiB",
            note=f"after 1000 calls; for scale, one upstream process: {h._fmt(upstream)} MiB",
        )
    )
    results.add(
        h.Row(
            f"gateway RSS growth over {calls} calls",
            "MiB",
            None,
            None if before is None or after is None else after - before,
            "<= 5 MiB",
            note=f"{h._fmt(before)} -> {h._fmt(after)} MiB, "
            f"{h.INFLIGHT} in flight across {START_UPSTREAMS} upstreams",
        )
    )
    h.reap(str(config))


# --- peers ----------------------------------------------------------------------------------------


async def _tool_named(client: Client, suffix: str) -> str:
    """A peer names tools its own way (fastmcp: `<server>_<tool>`): the one whose name ends so."""
    names = [t.name for t in (await client.list_tools()).tools]
    found = [n for n in names if n == suffix or n.endswith(f"_{suffix}")]
    if not found:
        raise RuntimeError(f"no tool named like {suffix!r} in {names[:10]}")
    return sorted(found)[0]


async def _three_way(
    calls: dict[str, Callable[[], Awaitable[None]]], n: int, warmup: int
) -> dict[str, float]:
    """p50 ms of each side, the sides taking turns call by call (and which goes first)."""
    for _ in range(warmup):
        for call in calls.values():
            await call()
    samples: dict[str, list[float]] = {side: [] for side in calls}
    order = list(calls)
    for i in range(n):
        for side in order[i % len(order) :] + order[: i % len(order)]:
            started = time.perf_counter()
            await calls[side]()
            samples[side].append(time.perf_counter() - started)
    return {side: statistics.median(v) * 1000 for side, v in samples.items()}


def _peer_config(h: Any, tmp: Path, name: str, servers: dict[str, dict[str, Any]]) -> Path:
    import json

    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


async def bench_peers(h: Any, s: Any, tmp: Path, results: Any, errlog: IO[str]) -> None:
    """fastmcp's proxy beside mcpgw, each against the upstream reached directly, in one run."""
    # stdio call p50: direct, mcpgw, fastmcp proxy, call by call in turn.
    gw_config = h.write_registry(tmp / "peer-gw.toml", {"up": h.stdio_entry("peer-gw")})
    gw_config.write_text(gw_config.read_text() + "\n[audit]\nenabled = false\n")
    fm_config = _peer_config(h, tmp, "peer-fastmcp", {"up": h.stdio_entry("peer-fm")})
    async with (
        h.stdio_client_of(h.upstream_args("peer-direct"), s.mode, errlog) as direct,
        h.stdio_client_of(h.gateway_args(gw_config), s.mode, errlog) as gateway,
        h.stdio_client_of([str(PEER_FASTMCP), str(fm_config)], s.mode, errlog) as fastmcp,
    ):
        tools = {
            "direct": (direct, "echo"),
            "mcpgw": (gateway, "up__echo"),
            "fastmcp proxy": (fastmcp, await _tool_named(fastmcp, "echo")),
        }
        for client, tool in tools.values():
            await h.check_echo(client, tool)
        p50 = await _three_way(
            {side: h.echo_call(client, tool) for side, (client, tool) in tools.items()}, s.calls, s.warmup
        )
    _rows(h, results, "peers: stdio call p50", p50)
    h.reap(f"{h.TOKEN}-peer")
    h.reap(str(gw_config))

    # tools/list over 10 upstreams x 50 tools, and start to that first list.
    many = _upstreams(h, "peerlist", "--tools", str(PEER_TOOLS))
    gw_config = h.write_registry(tmp / "peer-list.toml", many)
    gw_config.write_text(
        gw_config.read_text() + "\n[audit]\nenabled = false\n[gateway]\nremember_catalog = false\n"
    )
    fm_config = _peer_config(h, tmp, "peer-list", many)
    starts: dict[str, float] = {}
    peers: dict[str, Client] = {}
    async with contextlib.AsyncExitStack() as stack:
        # Each started in turn beside the ones before it, as a user's machine would run one of them.
        started = time.perf_counter()
        gateway = await stack.enter_async_context(
            h.stdio_client_of(h.gateway_args(gw_config), s.mode, errlog)
        )
        want = len((await gateway.list_tools()).tools)
        starts["mcpgw"] = time.perf_counter() - started
        peers["mcpgw"] = gateway
        started = time.perf_counter()
        fastmcp = await stack.enter_async_context(
            h.stdio_client_of([str(PEER_FASTMCP), str(fm_config)], s.mode, errlog)
        )
        got = len((await fastmcp.list_tools()).tools)
        starts["fastmcp proxy"] = time.perf_counter() - started
        if got != want:
            raise RuntimeError(f"fastmcp's proxy listed {got} tools, mcpgw {want}")
        peers["fastmcp proxy"] = fastmcp
        if not peer_gateways.missing(peer_gateways.MCP_HUB, "mcp-hub"):
            started = time.perf_counter()
            hub = await stack.enter_async_context(peer_gateways.mcp_hub(h, tmp, many, "peer-hub-list"))
            got = len(await peer_gateways.listed(hub))
            starts["mcp-hub"] = time.perf_counter() - started
            if got != want:
                raise RuntimeError(f"mcp-hub listed {got} tools, mcpgw {want}")
            peers["mcp-hub"] = hub
        single = h.upstream_args("peerlist-direct", "--tools", str(_as_many(want)))
        direct = await stack.enter_async_context(h.stdio_client_of(single, s.mode, errlog))
        reps = max(5, s.list_reps // 3)
        listers = {"direct": _lister(direct), **{side: _lister(client) for side, client in peers.items()}}
        p50 = await _three_way(listers, reps, 2)
    label = f"peers: tools/list {want} tools from {START_UPSTREAMS} upstreams"
    _rows(h, results, label, p50, "'direct' is one upstream serving as many tools")
    parallel, _ = await _parallel_direct(h, "peerstart", s.mode, errlog)
    ms = {"direct": parallel * 1000, **{side: seconds * 1000 for side, seconds in starts.items()}}
    label = f"peers: start to the first list, {START_UPSTREAMS} upstreams"
    _rows(h, results, label, ms, "one start each; 'direct' is the same upstreams started in parallel")
    h.reap(f"{h.TOKEN}-peer")
    h.reap(str(gw_config))
    await _bridges(h, s, tmp, results, errlog)
    await _http_upstreams(h, s, tmp, results)


def _rows(h: Any, results: Any, label: str, ms: dict[str, float], note: str = "") -> None:
    """A row for each side of `ms` (milliseconds) but 'direct', against it: `label`, then the side."""
    for side, value in ms.items():
        if side != "direct":
            results.add(h.Row(f"{label}, {side}", "ms", ms["direct"], value, note=note))


def _as_many(want: int) -> int:
    """The `--tools` that makes one upstream serve `want` tools, as many as the `START_UPSTREAMS`
    upstreams of `PEER_TOOLS` generated tools each serve together (each has some of its own besides)."""
    own = want // START_UPSTREAMS - PEER_TOOLS
    return want - own


def _lister(client: Client) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await peer_gateways.listed(client)

    return call


async def _bridges(h: Any, s: Any, tmp: Path, results: Any, errlog: IO[str]) -> None:
    """A stdio upstream served over HTTP: by mcpgw, fastmcp's proxy and (when installed) mcp-proxy,
    supergateway and mcp-hub (over HTTP+SSE), call p50 against the same upstream reached directly over
    stdio."""
    gw_port, mp_port, fm_port = h.free_port(), h.free_port(), h.free_port()
    fm_config = _peer_config(h, tmp, "peer-http-fastmcp", {"up": h.stdio_entry("peer-hfm")})
    fm_cmd = [sys.executable, str(PEER_FASTMCP), str(fm_config), "--http", str(fm_port)]
    config = h.write_registry(tmp / "peer-http.toml", {"up": h.stdio_entry("peer-hgw")})
    config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    gw_cmd = [sys.executable, *h.gateway_args(config, "--transport", "http", "--port", str(gw_port))]
    mp_cmd = [str(MCP_PROXY), "--host", "127.0.0.1", "--port", str(mp_port), "--", sys.executable]
    mp_cmd += h.upstream_args("peer-hmp")
    sg_port = h.free_port()
    upstream = " ".join([sys.executable, *h.upstream_args("peer-hsg")])
    sg_cmd = [str(SUPERGATEWAY), "--stdio", upstream, "--outputTransport", "streamableHttp", "--stateful"]
    sg_cmd += ["--port", str(sg_port), "--logLevel", "none"]  # stateful: one child, not one per request
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(h.background(gw_cmd, tmp / "peer-http-gateway.log", port=gw_port))
        sides = {
            "direct": (
                await stack.enter_async_context(
                    h.stdio_client_of(h.upstream_args("peer-hd"), s.mode, errlog)
                ),
                "echo",
            ),
            "mcpgw": (
                await stack.enter_async_context(h.http_client_of(f"http://127.0.0.1:{gw_port}/mcp", s.mode)),
                "up__echo",
            ),
        }
        stack.enter_context(h.background(fm_cmd, tmp / "peer-fastmcp-http.log", port=fm_port))
        client = await stack.enter_async_context(h.http_client_of(f"http://127.0.0.1:{fm_port}/mcp", s.mode))
        sides["fastmcp proxy"] = (client, await _tool_named(client, "echo"))
        if not peer_gateways.missing(MCP_PROXY, "mcp-proxy"):
            stack.enter_context(h.background(mp_cmd, tmp / "peer-mcp-proxy.log", port=mp_port))
            client = await stack.enter_async_context(
                h.http_client_of(f"http://127.0.0.1:{mp_port}/mcp", s.mode)
            )
            sides["mcp-proxy"] = (client, "echo")
        if not peer_gateways.missing(SUPERGATEWAY, "supergateway"):
            stack.enter_context(h.background(sg_cmd, tmp / "peer-supergateway.log", port=sg_port))
            # Handshake era: it passes the upstream's `server/discover` answer through but keeps a session
            # per `initialize`, so a 2026-07-28 client (no session) got a new child per call (4 s each).
            sg_url = f"http://127.0.0.1:{sg_port}/mcp"
            client = await stack.enter_async_context(h.http_client_of(sg_url, "legacy"))
            sides["supergateway"] = (client, "echo")
        if not peer_gateways.missing(peer_gateways.MCP_HUB, "mcp-hub"):
            one = {"up": h.stdio_entry("peer-hhub")}
            client = await stack.enter_async_context(peer_gateways.mcp_hub(h, tmp, one, "peer-hub-http"))
            sides["mcp-hub"] = (client, "up__echo")
        for client, tool in sides.values():
            await h.check_echo(client, tool)
        p50 = await _three_way(
            {side: h.echo_call(client, tool) for side, (client, tool) in sides.items()}, s.calls, s.warmup
        )
    _rows(
        h,
        results,
        "peers: stdio upstream served over HTTP, call p50",
        p50,
        "'direct' is the upstream over stdio",
    )
    h.reap(f"{h.TOKEN}-peer")
    h.reap(str(config))


async def _http_upstreams(h: Any, s: Any, tmp: Path, results: Any) -> None:
    """Ten streamable HTTP upstreams behind mcpgw and ContextForge (when installed): call p50 against
    one of them reached directly, `tools/list` of all of them against one upstream serving as many."""
    if peer_gateways.missing(peer_gateways.CONTEXTFORGE, "ContextForge"):
        return
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for i in range(START_UPSTREAMS):
            port = h.free_port()
            command = [sys.executable, *h.upstream_args(f"peer-cf-{i}", "--tools", str(PEER_TOOLS))]
            stack.enter_context(
                h.background([*command, "--http", str(port)], tmp / "peer-cf-up.log", port=port)
            )
            urls[f"u{i}"] = f"http://127.0.0.1:{port}/mcp"
        config = h.write_registry(tmp / "peer-cf-gw.toml", {name: {"url": url} for name, url in urls.items()})
        config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
        gw_port = h.free_port()
        gw_cmd = [sys.executable, *h.gateway_args(config, "--transport", "http", "--port", str(gw_port))]
        stack.enter_context(h.background(gw_cmd, tmp / "peer-cf-gateway.log", port=gw_port))
        forge = await stack.enter_async_context(peer_gateways.contextforge(h, tmp, urls))
        sides = {
            "direct": await stack.enter_async_context(h.http_client_of(urls["u0"], s.mode)),
            "mcpgw": await stack.enter_async_context(
                h.http_client_of(f"http://127.0.0.1:{gw_port}/mcp", s.mode)
            ),
            "ContextForge": await stack.enter_async_context(h.http_client_of(forge, s.mode)),
        }
        names = {side: await peer_gateways.listed(client) for side, client in sides.items()}
        tools = {"direct": "echo", "mcpgw": "u0__echo", "ContextForge": "u0-echo"}  # its `<server>-<tool>`
        for side, client in sides.items():
            await h.check_echo(client, tools[side])
        want = len(names["mcpgw"])
        if len(names["ContextForge"]) != want:
            raise RuntimeError(f"ContextForge listed {len(names['ContextForge'])} tools, mcpgw {want}")
        calls = {side: h.echo_call(client, tools[side]) for side, client in sides.items()}
        p50 = await _three_way(calls, s.calls, s.warmup)
        versions = ", ".join(f"{side} {client.protocol_version}" for side, client in sides.items())
        _rows(
            h,
            results,
            "peers: HTTP upstreams, call p50",
            p50,
            f"'direct' is one of them; protocols: {versions}",
        )
        port = h.free_port()
        single = [
            sys.executable,
            *h.upstream_args("peer-cf-one", "--tools", str(_as_many(want)), "--http", str(port)),
        ]
        stack.enter_context(h.background(single, tmp / "peer-cf-up.log", port=port))
        sides["direct"] = await stack.enter_async_context(
            h.http_client_of(f"http://127.0.0.1:{port}/mcp", s.mode)
        )
        listers = {side: _lister(client) for side, client in sides.items()}
        p50 = await _three_way(listers, max(5, s.list_reps // 3), 2)
    label = f"peers: tools/list {want} tools from {START_UPSTREAMS} HTTP upstreams"
    _rows(h, results, label, p50, "'direct' is one HTTP upstream serving as many tools")
    h.reap(f"{h.TOKEN}-peer")
    h.reap(str(config))


# --- profile --------------------------------------------------------------------------------------


class Profiler:
    """py-spy attached to every gateway process this run starts (found by their command line), each
    recording its samples to a file; `report` prints the top frames of all of them together.

    A section that times calls says so (`serving`, from `latencies`): what was recorded until then (the
    gateway's imports, its upstreams' start, the warm-up) is set apart, and the report is of the calls
    alone. Without that, a call section's profile was mostly the start-up's imports. A section that
    times start-up (`start`, `cold`) never says so, and is profiled from each process's start."""

    def __init__(self, h: Any, folder: Path) -> None:
        self._h, self._folder = h, folder
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._recorders: dict[int, subprocess.Popen[bytes]] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._serving = False
        self.error: str | None = None

    def __enter__(self) -> Profiler:
        self.spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(self.spy).exists():
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for recorder in self._recorders.values():
            _stopped(recorder)  # it writes its file once the gateway is gone

    def serving(self) -> None:
        """From now on calls are timed: the samples so far are start-up, kept apart (once a run)."""
        with self._lock:
            if self._serving:
                return
            self._serving = True
            for recorder in self._recorders.values():  # all told first, then each waited for
                if recorder.poll() is None:
                    recorder.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for pid, recorder in list(self._recorders.items()):
                _stopped(recorder)
                startup = self._folder / f"profile-{pid}.txt"
                if startup.exists():
                    startup.rename(startup.with_name(f"startup-{pid}.txt"))
                if self._h._alive(pid):
                    self._recorders[pid] = self._record(pid)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid in self._h.pids_matching(self._h.TOKEN):
                cmdline = self._h._cmdline(pid)
                with self._lock:
                    if pid in self._recorders or " -m mcpgw serve " not in cmdline or not self._h._alive(pid):
                        continue
                    self._recorders[pid] = self._record(pid)
            time.sleep(0.02)

    def _record(self, pid: int) -> subprocess.Popen[bytes]:
        out = self._folder / f"profile-{pid}.txt"
        command = [self.spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw"]
        # --gil: only the thread running Python counts (threads waiting on a queue or a lock, and the
        # loop waiting in epoll, are not CPU); --nonblocking: the gateway is never paused to be read.
        command.extend(["-o", str(out), "--gil", "--nonblocking"])
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def report(self, top: int = 30) -> None:
        own, total, packages, samples, partial = _read_samples(sorted(self._folder.glob("profile-*.txt")))
        started = _read_samples(sorted(self._folder.glob("startup-*.txt")))[3]
        when = "while serving the timed calls" if self._serving else "from each process's start"
        print(
            f"\nCPU profile of the gateway process(es) {when}: {samples} samples holding the GIL "
            "(py-spy, 500 Hz)"
        )
        if started:
            print(f"  ({started} samples before the first timed call, the start-up and warm-up, left out)")
        if not samples:
            if not self._recorders:
                print("  no samples: this section started no `mcpgw serve` process")
            else:
                print("  no samples: py-spy could not attach (try as root, or kernel.yama.ptrace_scope=0)")
            return
        print("  by package (own time):")
        for name, n in packages.most_common(12):
            print(f"    {100 * n / samples:5.1f}%  {name}")
        print("  top frames by own time:")
        for frame, n in own.most_common(top):
            print(f"    {100 * n / samples:5.1f}%  {frame}")
        print("  top frames including callees:")
        if partial:
            print(
                f"  ({100 * partial / samples:.0f}% of the stacks were read cut short, as py-spy reads a"
                " stack without pausing the gateway: their outer frames are missing here)"
            )
        for frame, n in total.most_common(top):
            print(f"    {100 * n / samples:5.1f}%  {frame}")


def _stopped(recorder: subprocess.Popen[bytes]) -> None:
    """Wait for a py-spy recorder to end, its file written."""
    try:
        recorder.wait(15)
    except subprocess.TimeoutExpired:
        recorder.terminate()
        recorder.wait(5)


_ROOTS = ("_run_module_as_main ", "Thread._bootstrap ", "<module> ")
"""The outermost frame of a whole stack: the main thread's, or another thread's."""


def _read_samples(paths: list[Path]) -> tuple[Counter[str], Counter[str], Counter[str], int, int]:
    """Own time, time including callees and own time by package, per frame; the sample count, and how
    many of the stacks were read cut short (`--nonblocking` reads a stack while it changes)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = partial = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            samples += n
            if not frames[0].startswith(_ROOTS):
                partial += n
            own[frames[-1]] += n
            packages[_package(frames[-1])] += n
            for frame in set(frames):
                total[frame] += n
    return own, total, packages, samples, partial


def _package(frame: str) -> str:
    """`write (asyncio/selector_events.py:1040)` -> `asyncio`; mcpgw's own code by its package."""
    where = frame.rpartition("(")[2]
    path = where.split(":")[0]
    for marker in ("site-packages/", "python3.11/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    parts = path.split("/")
    if parts[0] == "mcpgw" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else path
