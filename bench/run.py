"""mcpgw benchmark: the gateway against the same upstream reached directly, measured in one run.

    python bench/run.py [--quick] [--calls N] [--mode auto|legacy] [--json FILE]

Every figure is a pair measured in the same run (interleaved where that makes
sense, so machine noise hits both sides alike) and reported as a ratio
gateway/direct against its target:

  1. stdio tool-call latency, p50 of sequential `echo` calls        <= 1.25x
  2. stdio throughput, 16 calls in flight (calls/s)                 >= 0.85x
  3. the same two over streamable HTTP (gateway and direct clients share one HTTP upstream),
     and both through a bare and a parsing relay in the gateway's place, and through `mcpgw serve`
     with nothing between its transports: the floor (`--only floor`, bench/floor.py, bench/skeleton.py);
     and the throughput of both with a client that costs next to nothing (bench/rawclient.py)
  4. cold start to the first tools/list: gateway with 10 stdio upstreams
     versus one upstream started directly (median of a few runs)    <= 1.3x
  5. tools/list over a 500-tool upstream (median)                   <= 0.5x
  6. gateway RSS (VmRSS of the `python -m mcpgw` process, not its children)
     after the stdio benchmark, upstream still connected            <= 80 MiB
  7. `mcpgw --version` and `--help`, p50, beside `python -c pass`   <= 250 ms
  8. cold start to the first tools/list: gateway with an OpenAPI server of 424 operations
     (tests/openapi_big.py) versus gateway with one stdio upstream; and the spec's parse alone
  9. start-up from the remembered catalog, RSS with 10 upstreams, the peers' columns and
     `--profile SECTION`: see bench/startup.py
  10. one replica on SQLite against three on PostgreSQL and Redis behind nginx (`--only cluster`):
     call p50 and throughput (information: on two cores the replicas share the same CPUs)

It is a measurement, not a test: a missed target does not change the exit
status. The exit status is 1 only when a section could not be measured.
Every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

import floor  # bench/floor.py: the same client through a bare and a parsing relay: the call rows' floor
import rawclient  # bench/rawclient.py: throughput with a client that costs next to nothing
import startup  # bench/startup.py: the start-up, memory and peers sections, and --profile

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT / "tests" / "servers" / "upstream.py"
PYTHON = sys.executable
TOKEN = f"mcpgwbench-{os.getpid()}-{secrets.token_hex(4)}"
"""Put in every command line this run starts, so leftovers can be found (and only ours)."""

INFLIGHT = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
COLD_UPSTREAMS = 10
PROFILER: startup.Profiler | None = None
"""With `--profile`: told when a section's timed calls begin (`latencies`)."""
BIG_CATALOG = 500


# --- results --------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    unit: str
    direct: float | None
    gateway: float | None
    target: str = "-"
    """'<= X' or '>= X' on the ratio, or '<= X MiB' on the gateway value; '-' for information."""
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.direct is None or self.gateway is None or self.direct == 0:
            return None
        return self.gateway / self.direct

    @property
    def passed(self) -> bool | None:
        if self.target == "-":
            return None
        op, raw, *unit = self.target.split()
        limit = float(raw.rstrip("x"))
        value = self.gateway if unit else self.ratio
        if value is None:
            return None
        return value <= limit if op == "<=" else value >= limit

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "direct": self.direct,
            "gateway": self.gateway,
            "ratio": self.ratio,
            "target": self.target,
            "pass": self.passed,
            "note": self.note,
            "samples": self.samples,
        }


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        direct = f"direct {_fmt(row.direct)} {row.unit}, " if row.direct is not None else ""
        ratio = f", ratio {row.ratio:.2f}x" if row.ratio is not None else ""
        print(f"  {row.metric}: {direct}gateway {_fmt(row.gateway)} {row.unit}{ratio}", flush=True)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def summary(samples_s: list[float]) -> dict[str, Any]:
    """Milliseconds: n, p50, p95, mean, min, max."""
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
    }


def print_table(results: Results) -> None:
    headers = ("metric", "direct", "gateway", "ratio", "target", "result")
    lines = []
    for row in results.rows:
        unit = f" {row.unit}"
        ratio = "-" if row.ratio is None or row.unit == "MiB" else f"{row.ratio:.2f}x"
        verdict = {True: "pass", False: "MISS", None: "-"}[row.passed]
        lines.append(
            (
                row.metric,
                _fmt(row.direct) + (unit if row.direct is not None else ""),
                _fmt(row.gateway) + (unit if row.gateway is not None else ""),
                ratio,
                row.target,
                verdict,
            )
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)
    ]

    def fmt_line(cells: tuple[str, ...]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded)

    print()
    print(fmt_line(headers))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(fmt_line(line))
    for row in results.rows:
        if row.note:
            print(f"  note: {row.metric}: {row.note}")
    for section, error in results.errors.items():
        print(f"  ERROR in {section}: {error}")


# --- processes ------------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_matching(needle: str) -> list[int]:
    """Pids (not ours) whose command line contains `needle`."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and needle in _cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def _alive(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state != "Z"


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def find_gateway_pid(config: Path) -> int:
    """The `python -m mcpgw serve --config <config>` process (the only one with this unique path)."""
    pids = [pid for pid in pids_matching(str(config)) if "mcpgw" in _cmdline(pid) and _alive(pid)]
    if len(pids) != 1:
        raise RuntimeError(f"expected one gateway process for {config}, found {pids}")
    return pids[0]


def the_upstream(name: str) -> int:
    """The pid of the one live test upstream started with `--name TOKEN-<name>`."""
    pids = [pid for pid in pids_matching(f"{TOKEN}-{name} ") if _alive(pid)]
    if len(pids) != 1:
        raise RuntimeError(f"expected one upstream named {name}, found {pids}")
    return pids[0]


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of these processes (all their threads), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def wait_gone(needle: str, timeout: float = 10.0) -> list[int]:
    """Wait for every process of ours matching `needle` to exit; returns the ones still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids_matching(needle) if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each (its whole group when it leads one)."""
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def reap(needle: str, timeout: float = 10.0) -> None:
    """Make sure nothing matching `needle` outlives its section: wait, then kill stragglers by pid."""
    left = wait_gone(needle, timeout)
    if left:
        print(f"  warning: killing {len(left)} leftover process(es): {left}", file=sys.stderr)
        kill_pids(left)
        wait_gone(needle, 5.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    command = " ".join(str(a) for a in process.args) if isinstance(process.args, list) else str(process.args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


@contextmanager
def background(
    command: list[str],
    log: Path,
    *,
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    listening_within: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process in its own session for the length of a block; its group is killed after."""
    with log.open("ab") as errfile:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=errfile,
            stderr=errfile,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    try:
        wait_for_port(port, process, listening_within)
        yield process
    finally:
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


# --- registries and clients ----------------------------------------------------------------------


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_registry(path: Path, servers: dict[str, dict[str, Any]]) -> Path:
    """The registry file `path`'s name says, written in a `registries` folder beside it: the run's
    logs and audit databases are written where `path` is, and a gateway watches its registry's folder
    for edits (reload), so a registry there would wake its gateway on every log line (a user's
    servers.toml does not sit beside a log written on every call). Returns where it was written."""
    path = path.parent / "registries" / path.name
    path.parent.mkdir(exist_ok=True)
    lines = []
    for name, entry in servers.items():
        lines.append(f"[servers.{name}]")
        for key, value in entry.items():
            if isinstance(value, list):
                lines.append(f"{key} = [{', '.join(_toml_str(v) for v in value)}]")
            else:
                lines.append(f"{key} = {_toml_str(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def upstream_args(name: str, *extra: str) -> list[str]:
    return [str(UPSTREAM), "--name", f"{TOKEN}-{name}", *extra]


def stdio_entry(name: str, *extra: str) -> dict[str, Any]:
    return {"command": PYTHON, "args": upstream_args(name, *extra)}


def gateway_args(config: Path, *extra: str) -> list[str]:
    return ["-m", "mcpgw", "serve", "--config", str(config), "--log-level", "warning", *extra]


@asynccontextmanager
async def stdio_client_of(
    args: list[str], mode: str, errlog: IO[str], *, env: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """The mcp Client over stdio to `python ARGS` (the child's stderr goes to `errlog`; `env` added)."""
    params = StdioServerParameters(
        command=PYTHON, args=args, env={**os.environ, **(env or {})}, cwd=str(ROOT)
    )
    # Same as Client(params, ...) but with the child's stderr kept off the terminal.
    async with Client(stdio_client(params, errlog=errlog), mode=mode, cache=None) as client:  # type: ignore[arg-type]
        yield client


@asynccontextmanager
async def http_client_of(url: str, mode: str) -> AsyncIterator[Client]:
    async with Client(url, mode=mode, cache=None) as client:
        yield client


# --- measurements ---------------------------------------------------------------------------------


Call = Callable[[], Awaitable[None]]


def echo_call(client: Client, tool: str) -> Call:
    async def call() -> None:
        result = await client.call_tool(tool, {"message": "ping"})
        if result.is_error:
            raise RuntimeError(f"{tool} returned an error: {result.content}")

    return call


async def check_echo(client: Client, tool: str) -> None:
    tools = await client.list_tools()  # a 2026-07-28 client must list before calling
    if tool not in {t.name for t in tools.tools}:
        raise RuntimeError(f"{tool} not in the listing: {[t.name for t in tools.tools][:20]}")
    result = await client.call_tool(tool, {"message": "hello"})
    text = getattr(result.content[0], "text", None) if result.content else None
    if result.is_error or text != "hello":
        raise RuntimeError(f"{tool} echoed {result.content!r}")


async def latencies(
    direct: Call, gateway: Call, calls: int, warmup: int, *, collect_every: int = 25
) -> tuple[list[float], list[float]]:
    """Sequential calls, alternating direct and gateway call by call (and which goes first).

    The benchmark's own garbage collector is kept out of the timings: it is off while timing and
    run between samples every `collect_every` pairs. Left on, its pauses (tens of ms after big
    listings) land with a fixed period and so, with strict alternation, mostly on one side.
    """
    for _ in range(warmup):
        await direct()
        await gateway()
    if PROFILER is not None:  # `--profile`: what the gateway does per call, not its start-up
        PROFILER.serving()
    d: list[float] = []
    g: list[float] = []
    clock = time.perf_counter
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            order = ((direct, d), (gateway, g)) if i % 2 == 0 else ((gateway, g), (direct, d))
            for call, out in order:
                start = clock()
                await call()
                out.append(clock() - start)
            if (i + 1) % collect_every == 0:
                gc.collect()
    finally:
        if was_enabled:
            gc.enable()
    return d, g


async def burst(call: Call, total: int, inflight: int) -> float:
    """calls/s for `total` calls with `inflight` of them outstanding at all times."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(inflight):
            tg.start_soon(worker)
    return total / (time.perf_counter() - start)


@dataclass
class Throughput:
    direct: list[float] = field(default_factory=list)
    """calls/s of each direct round"""
    gateway: list[float] = field(default_factory=list)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU seconds per call (as ms) of the server processes over the measured rounds, by role."""


async def throughputs(
    direct: Call, gateway: Call, rounds: int, per_round: int, cpu_of: dict[str, list[int]] | None = None
) -> Throughput:
    """Alternating rounds of `per_round` calls at INFLIGHT in flight.

    `cpu_of` maps a role ("direct", "gateway", "gateway process") to the pids whose CPU time is
    charged to it; each round is charged to the side that ran it, so a shared upstream is fine.
    """
    await burst(direct, INFLIGHT * 2, INFLIGHT)
    await burst(gateway, INFLIGHT * 2, INFLIGHT)
    out = Throughput()
    spent = {role: 0.0 for role in cpu_of or {}}
    for i in range(rounds):
        order = (("direct", direct, out.direct), ("gateway", gateway, out.gateway))
        for side, call, rates in order if i % 2 == 0 else order[::-1]:
            before = {
                role: cpu_seconds(pids) for role, pids in (cpu_of or {}).items() if role.startswith(side)
            }
            rates.append(await burst(call, per_round, INFLIGHT))
            for role, start in before.items():
                spent[role] += cpu_seconds((cpu_of or {})[role]) - start
    out.cpu_ms = {role: seconds / (rounds * per_round) * 1000 for role, seconds in spent.items()}
    return out


RAW_NOTE = (
    "16 in flight from a raw client (bench/rawclient.py: 2026-07-28 calls, no SDK), so the rate is the"
    " servers' and not the client's"
)


def raw_rows(results: Results, transport: str, rates: tuple[list[float], list[float]]) -> None:
    """The throughput row of a raw client's rounds (`rawclient.alternating`): information, no target."""
    direct, gateway = rates
    results.add(
        Row(
            f"{transport} throughput x{INFLIGHT}, raw client",
            "calls/s",
            statistics.median(direct),
            statistics.median(gateway),
            note=RAW_NOTE,
            samples={"direct_rounds": direct, "gateway_rounds": gateway},
        )
    )


def call_rows(
    results: Results,
    transport: str,
    d_lat: list[float],
    g_lat: list[float],
    tp: Throughput,
    *,
    note: str = "",
) -> None:
    """The call p50, p95 and throughput rows (and, when measured, the CPU per call). `note`: the rows
    are information, with no target (the floor's relay in the gateway column: `bench/floor.py`)."""
    ds, gs = summary(d_lat), summary(g_lat)
    results.add(
        Row(
            f"{transport} call p50",
            "ms",
            ds["p50_ms"],
            gs["p50_ms"],
            "-" if note else "<= 1.25x",
            note=note,
            samples={"direct": ds, "gateway": gs},
        )
    )
    results.add(Row(f"{transport} call p95", "ms", ds["p95_ms"], gs["p95_ms"], note=note))
    results.add(
        Row(
            f"{transport} throughput x{INFLIGHT}",
            "calls/s",
            statistics.median(tp.direct),
            statistics.median(tp.gateway),
            "-" if note else ">= 0.85x",
            note=note,
            samples={"direct_rounds": tp.direct, "gateway_rounds": tp.gateway},
        )
    )
    if tp.cpu_ms:
        results.add(
            Row(
                f"{transport} server CPU per call",
                "ms",
                tp.cpu_ms.get("direct"),
                tp.cpu_ms.get("gateway"),
                note=f"servers' CPU over the throughput rounds (upstream; gateway + upstream); "
                f"the gateway process alone: {_fmt(tp.cpu_ms.get('gateway process'))} ms/call",
                samples=dict(tp.cpu_ms),
            )
        )
    if "gateway process" in tp.cpu_ms:
        results.add(
            Row(
                f"{transport} gateway process CPU per call",
                "ms",
                tp.cpu_ms.get("direct"),
                tp.cpu_ms.get("gateway process"),
                note="the gateway process alone beside the upstream alone (the lean forward path's "
                "cost, and the figure least moved by other load on the machine)",
            )
        )


@dataclass
class Settings:
    mode: str
    calls: int
    warmup: int
    rounds: int
    per_round: int
    cold_reps: int
    list_reps: int


async def bench_stdio(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    config = write_registry(tmp / "stdio.toml", {"up": stdio_entry("stdio-gw")})
    async with (
        stdio_client_of(upstream_args("stdio-direct"), s.mode, errlog) as direct,
        stdio_client_of(gateway_args(config), s.mode, errlog) as gateway,
    ):
        results.info["stdio_protocol"] = {
            "direct": direct.protocol_version,
            "gateway": gateway.protocol_version,
        }
        await check_echo(direct, "echo")
        await check_echo(gateway, "up__echo")
        gw_pid = find_gateway_pid(config)
        direct_up, gateway_up = the_upstream("stdio-direct"), the_upstream("stdio-gw")
        d_call, g_call = echo_call(direct, "echo"), echo_call(gateway, "up__echo")
        d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
        tp = await throughputs(
            d_call,
            g_call,
            s.rounds,
            s.per_round,
            cpu_of={"direct": [direct_up], "gateway": [gw_pid, gateway_up], "gateway process": [gw_pid]},
        )
        call_rows(results, "stdio", d_lat, g_lat, tp)

        gw_rss = rss_mib(gw_pid)
        up_rss = rss_mib(direct_up)
        results.add(
            Row(
                "gateway RSS (stdio, upstream connected)",
                "MiB",
                None,
                gw_rss,
                "<= 80 MiB",
                note=f"for scale, the direct upstream process itself: {_fmt(up_rss)} MiB",
                samples={"gateway_pid": gw_pid, "upstream_rss_mib": up_rss},
            )
        )
    raw_config = write_registry(tmp / "stdio-raw.toml", {"up": stdio_entry("stdio-raw-gw")})
    direct_raw = rawclient.StdioRates(
        [PYTHON, *upstream_args("stdio-raw-direct")], "echo", cwd=str(ROOT), stderr=errlog
    )
    gateway_raw = rawclient.StdioRates(
        [PYTHON, *gateway_args(raw_config)], "up__echo", cwd=str(ROOT), stderr=errlog
    )
    async with rawclient.opened(direct_raw, gateway_raw):
        rates = await rawclient.alternating(direct_raw.rate, gateway_raw.rate, s.rounds, s.per_round * 4)
        raw_rows(results, "stdio", rates)
    reap(TOKEN + "-stdio")
    reap(str(config))
    reap(str(raw_config))


async def bench_http(s: Settings, tmp: Path, results: Results) -> None:
    up_port, gw_port = free_port(), free_port()
    up_url = f"http://127.0.0.1:{up_port}/mcp"
    config = write_registry(tmp / "http.toml", {"up": {"url": up_url}})
    up_cmd = [PYTHON, *upstream_args("http", "--http", str(up_port))]
    gw_cmd = [
        PYTHON,
        *gateway_args(config, "--transport", "http", "--host", "127.0.0.1", "--port", str(gw_port)),
    ]
    with (
        background(up_cmd, tmp / "http-upstream.log", port=up_port) as up_process,
        background(gw_cmd, tmp / "http-gateway.log", port=gw_port) as gw_process,
    ):
        async with (
            http_client_of(up_url, s.mode) as direct,
            http_client_of(f"http://127.0.0.1:{gw_port}/mcp", s.mode) as gateway,
        ):
            results.info["http_protocol"] = {
                "direct": direct.protocol_version,
                "gateway": gateway.protocol_version,
            }
            await check_echo(direct, "echo")
            await check_echo(gateway, "up__echo")
            gw_pid = gw_process.pid  # started directly: `python -m mcpgw`, no wrapper in between
            d_call, g_call = echo_call(direct, "echo"), echo_call(gateway, "up__echo")
            d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
            tp = await throughputs(
                d_call,
                g_call,
                s.rounds,
                s.per_round,
                cpu_of={
                    "direct": [up_process.pid],
                    "gateway": [gw_pid, up_process.pid],
                    "gateway process": [gw_pid],
                },
            )
            call_rows(results, "http", d_lat, g_lat, tp)
            direct_raw, gateway_raw = (
                rawclient.HttpRates(up_port, "echo"),
                rawclient.HttpRates(gw_port, "up__echo"),
            )
            async with rawclient.opened(direct_raw, gateway_raw):
                rates = await rawclient.alternating(
                    direct_raw.rate, gateway_raw.rate, s.rounds, s.per_round * 4
                )
                raw_rows(results, "http", rates)
            results.info["http_gateway_rss_mib"] = rss_mib(gw_pid)
    reap(TOKEN + "-http")
    reap(str(config))


async def bench_big_list(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    config = write_registry(tmp / "big.toml", {"big": stdio_entry("big-gw", "--tools", str(BIG_CATALOG))})
    async with (
        stdio_client_of(upstream_args("big-direct", "--tools", str(BIG_CATALOG)), s.mode, errlog) as direct,
        stdio_client_of(gateway_args(config), s.mode, errlog) as gateway,
    ):
        expected = len((await direct.list_tools()).tools)
        through = len((await gateway.list_tools()).tools)
        if expected < BIG_CATALOG or through != expected:
            raise RuntimeError(f"the gateway listed {through} tools, the upstream {expected}")

        async def list_direct() -> None:
            await direct.list_tools()

        async def list_gateway() -> None:
            await gateway.list_tools()

        d, g = await latencies(list_direct, list_gateway, s.list_reps, 2, collect_every=1)
    ds, gs = summary(d), summary(g)
    results.add(
        Row(
            f"tools/list {expected} tools p50",
            "ms",
            ds["p50_ms"],
            gs["p50_ms"],
            "<= 0.5x",
            samples={"direct": ds, "gateway": gs},
        )
    )
    raw_config = write_registry(
        tmp / "big-raw.toml", {"big": stdio_entry("big-raw-gw", "--tools", str(BIG_CATALOG))}
    )
    direct_raw = rawclient.StdioRates(
        [PYTHON, *upstream_args("big-raw-direct", "--tools", str(BIG_CATALOG))],
        "echo",
        cwd=str(ROOT),
        stderr=errlog,
    )
    gateway_raw = rawclient.StdioRates(
        [PYTHON, *gateway_args(raw_config)], "big__echo", cwd=str(ROOT), stderr=errlog
    )

    async def list_raw(client: rawclient.StdioRates) -> None:
        listed = len((await client.request("tools/list")).get("tools") or [])
        if listed != expected:
            raise RuntimeError(f"raw tools/list: {listed} tools, not {expected}")

    async with rawclient.opened(direct_raw, gateway_raw):
        raw = await latencies(
            partial(list_raw, direct_raw), partial(list_raw, gateway_raw), s.list_reps, 2, collect_every=1
        )
    rd, rg = summary(raw[0]), summary(raw[1])
    results.add(
        Row(
            f"tools/list {expected} tools p50, raw client",
            "ms",
            rd["p50_ms"],
            rg["p50_ms"],
            note="one 2026-07-28 request at a time from a raw client (bench/rawclient.py); the row above has"
            " the mcp SDK client's own parse and validation of every tool in both columns",
            samples={"direct": rd, "gateway": rg},
        )
    )
    reap(TOKEN + "-big")
    reap(str(config))
    reap(str(raw_config))


async def bench_cold_start(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """Client connect + first tools/list, from nothing: gateway over 10 upstreams vs one upstream."""
    d: list[float] = []
    g: list[float] = []
    per_upstream = 0
    last_count = 0

    async def once(rep: int, kind: str) -> float:
        tag = f"{TOKEN}-cold{rep}{kind}"
        if kind == "g":
            config = write_registry(
                tmp / f"cold{rep}.toml",
                {f"u{i}": stdio_entry(f"cold{rep}g-{i}") for i in range(COLD_UPSTREAMS)},
            )
            args, want = gateway_args(config), COLD_UPSTREAMS * per_upstream
        else:
            config, args, want = None, upstream_args(f"cold{rep}d"), per_upstream
        start = time.perf_counter()
        async with stdio_client_of(args, s.mode, errlog) as client:
            tools = await client.list_tools()
            elapsed = time.perf_counter() - start
        if want and len(tools.tools) != want:
            raise RuntimeError(f"cold start listed {len(tools.tools)} tools, expected {want}")
        nonlocal last_count
        last_count = len(tools.tools)
        # The next start must not compete with this one's shutdown for the CPU.
        reap(tag)
        if config is not None:
            reap(str(config))
        return elapsed

    await once(0, "d")  # warm the page cache and bytecode for both kinds of start
    per_upstream = last_count
    await once(0, "g")
    for rep in range(1, s.cold_reps + 1):
        order = (("d", d), ("g", g)) if rep % 2 else (("g", g), ("d", d))
        for kind, out in order:
            out.append(await once(rep, kind))
    results.add(
        Row(
            f"cold start to tools/list ({COLD_UPSTREAMS} upstreams vs 1)",
            "ms",
            statistics.median(d) * 1000,
            statistics.median(g) * 1000,
            "<= 1.3x",
            note=f"medians of {s.cold_reps}; direct {[round(x * 1000) for x in d]} ms, "
            f"gateway {[round(x * 1000) for x in g]} ms",
            samples={"direct_ms": [x * 1000 for x in d], "gateway_ms": [x * 1000 for x in g]},
        )
    )


async def bench_openapi(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """Cold start to the first tools/list with a 424-operation OpenAPI server, against a gateway with one
    stdio upstream; then the spec's parse to tools alone, in this process (median of 3)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from openapi_big import big_spec, operation_count

    document = big_spec()
    spec_file = tmp / "big-openapi.json"
    spec_file.write_text(json.dumps(document))
    operations = operation_count(document)
    # never called: listing needs the spec only (port 9, discard, is closed on loopback)
    openapi_entry = {"openapi": str(spec_file), "base_url": "http://127.0.0.1:9"}
    times: dict[str, list[float]] = {"stdio": [], "openapi": []}

    async def once(rep: int, kind: str) -> float:
        entry = stdio_entry(f"oa{rep}") if kind == "stdio" else openapi_entry
        config = write_registry(tmp / f"openapi-{kind}{rep}.toml", {"api": entry})
        start = time.perf_counter()
        async with stdio_client_of(gateway_args(config), s.mode, errlog) as client:
            listed = len((await client.list_tools()).tools)
            elapsed = time.perf_counter() - start
        if kind == "openapi" and listed != operations:
            raise RuntimeError(f"the gateway listed {listed} tools of {operations} operations")
        reap(str(config))
        return elapsed

    await once(0, "stdio")  # warm the page cache and bytecode for both
    await once(0, "openapi")
    for rep in range(1, s.cold_reps + 1):
        for kind in ("stdio", "openapi") if rep % 2 else ("openapi", "stdio"):
            times[kind].append(await once(rep, kind))
    d, g = statistics.median(times["stdio"]) * 1000, statistics.median(times["openapi"]) * 1000
    results.add(
        Row(
            f"cold start to tools/list (OpenAPI, {operations} operations vs 1 stdio upstream)",
            "ms",
            d,
            g,
            "<= 2.5x",
            note=f"medians of {s.cold_reps}; 'direct' is the gateway over one stdio upstream",
            samples={
                "stdio_ms": [x * 1000 for x in times["stdio"]],
                "openapi_ms": [x * 1000 for x in times["openapi"]],
            },
        )
    )
    import httpx2

    from mcpgw.config import OpenApiServer
    from mcpgw.upstream.openapi import build

    parses = []
    for _ in range(3):
        http = httpx2.AsyncClient(base_url="http://127.0.0.1:9")
        started = time.perf_counter()
        build("api", document, config=OpenApiServer(openapi=str(spec_file)), http=http, key="bench")
        parses.append(time.perf_counter() - started)
    parse_ms = statistics.median(parses) * 1000
    results.add(
        Row(
            f"OpenAPI spec to tools, {operations} operations (in process)",
            "ms",
            None,
            parse_ms,
            note=f"{parse_ms / operations:.2f} ms per operation, in a worker thread at the server's start",
            samples={"parse_ms": [x * 1000 for x in parses]},
        )
    )


def innermost(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


# --- main -----------------------------------------------------------------------------------------


SECTIONS = (
    "stdio",
    "http",
    "floor",
    "list",
    "cold",
    "audit",
    "audit-pg",
    "metrics",
    "traces",
    "redact",
    "flows",
    "cli",
    "openapi",
    "start",
    "rss",
    "peers",
    "cluster",
)
"""Every section, in the order a full run takes them."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller numbers: a smoke run in about 40 s")
    parser.add_argument(
        "--calls", type=int, default=None, help="sequential calls per side (default 300; quick 60)"
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "legacy"),
        default="auto",
        help="mcp Client mode: auto negotiates 2026-07-28, legacy forces the initialize handshake",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only these sections (repeatable)",
    )
    parser.add_argument(
        "--profile",
        choices=SECTIONS,
        default=None,
        help="run this section with py-spy sampling every gateway process, then print their top frames",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        s = Settings(args.mode, calls=60, warmup=10, rounds=2, per_round=64, cold_reps=2, list_reps=8)
    else:
        s = Settings(args.mode, calls=300, warmup=30, rounds=5, per_round=160, cold_reps=5, list_reps=30)
    if args.calls is not None:
        s.calls = max(1, args.calls)
    return s


async def bench_audit(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """The cost of the audit log: the same gateway with logging on and off, side by side."""
    off = write_registry(tmp / "audit-off.toml", {"up": stdio_entry("audit-off")})
    off.write_text(off.read_text() + "\n[audit]\nenabled = false\n")
    on = write_registry(tmp / "audit-on.toml", {"up": stdio_entry("audit-on")})
    on.write_text(on.read_text() + f"\n[audit]\npath = {_toml_str(str(tmp / 'bench-audit.db'))}\n")
    async with (
        stdio_client_of(gateway_args(off), s.mode, errlog) as without,
        stdio_client_of(gateway_args(on), s.mode, errlog) as with_log,
    ):
        await check_echo(without, "up__echo")
        await check_echo(with_log, "up__echo")
        d_call, g_call = echo_call(without, "up__echo"), echo_call(with_log, "up__echo")
        d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
        tp = await throughputs(d_call, g_call, s.rounds, s.per_round)
    ds, gs = summary(d_lat), summary(g_lat)
    note = "'direct' here is the same gateway with [audit] enabled = false"
    results.add(
        Row("audit on vs off: stdio call p50", "ms", ds["p50_ms"], gs["p50_ms"], "<= 1.05x", note=note)
    )
    results.add(
        Row(
            f"audit off vs on: throughput x{INFLIGHT}",
            "calls/s",
            statistics.median(tp.gateway),
            statistics.median(tp.direct),
            "<= 1.05x",
            note="ratio = calls/s with logging off / with logging on",
        )
    )


async def bench_audit_pg(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """The audit log on PostgreSQL against SQLite: the same gateway, one store each, side by side.
    The server is a throwaway cluster (tests/pg.py) with PostgreSQL's own fsync settings."""
    sys.path.insert(0, str(ROOT / "tests"))
    import psycopg

    from pg import running_postgres

    lite = write_registry(tmp / "audit-sqlite.toml", {"up": stdio_entry("audit-sqlite")})
    lite.write_text(lite.read_text() + f"\n[audit]\npath = {_toml_str(str(tmp / 'bench-lite.db'))}\n")
    with running_postgres(durable=True) as server:
        pg = write_registry(tmp / "audit-pg.toml", {"up": stdio_entry("audit-pg")})
        pg.write_text(pg.read_text() + f"\n[audit]\nurl = {_toml_str(server.url())}\n")
        async with (
            stdio_client_of(gateway_args(lite), s.mode, errlog) as on_sqlite,
            stdio_client_of(gateway_args(pg), s.mode, errlog) as on_pg,
        ):
            await check_echo(on_sqlite, "up__echo")
            await check_echo(on_pg, "up__echo")
            d_call, g_call = echo_call(on_sqlite, "up__echo"), echo_call(on_pg, "up__echo")
            d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
            cpu_of = {"direct": [find_gateway_pid(lite)], "gateway": [find_gateway_pid(pg)]}
            tp = await throughputs(d_call, g_call, s.rounds, s.per_round, cpu_of=cpu_of)
        with psycopg.connect(server.url()) as db:  # the calls' rows reached the table
            (rows,) = db.execute("select count(*) from events where kind = 'call'").fetchone() or (0,)
    if rows < s.calls:
        raise RuntimeError(f"only {rows} call rows reached PostgreSQL")
    on_off_rows(
        results,
        "PostgreSQL audit",
        summary(d_lat),
        summary(g_lat),
        tp,
        target="<= 1.1x",
        note="'off' (and 'direct') here is the same gateway with its audit log on SQLite, the default",
        throughput_note="ratio = calls/s on SQLite / on PostgreSQL",
        cpu_note="the gateway process's user+system CPU over the throughput rounds (not the server's)",
    )
    reap(str(lite))
    reap(str(pg))


async def bench_cluster(s: Settings, tmp: Path, results: Results) -> None:
    """One replica with its audit log on SQLite against three replicas on PostgreSQL and Redis
    (`[cluster]`) behind nginx running `deploy/nginx.conf`, in one run. 2026-07-28 clients: their
    requests are stateless, so nginx spreads them over the three. PostgreSQL, Redis and nginx are
    the test suite's (tests/pg.py, tests/services.py): real servers on 127.0.0.1, stopped after."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pg import running_postgres
    from services import nginx, redis_server

    single = write_registry(tmp / "cluster-single.toml", {"up": stdio_entry("cluster-single")})
    single.write_text(single.read_text() + f"\n[audit]\npath = {_toml_str(str(tmp / 'single.db'))}\n")
    (tmp / "redis").mkdir()
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(tmp / "redis"))
        postgres = stack.enter_context(running_postgres(durable=True))
        ports, pids = {}, []
        for name in ("mcpgw-1", "mcpgw-2", "mcpgw-3"):  # as deploy/nginx.conf names them
            config = write_registry(tmp / f"{name}.toml", {"up": stdio_entry(name)})
            audit = f'\n[audit]\nurl = {_toml_str(postgres.url())}\ndurable = "all"\n'  # as README advises
            extra = audit + f"[cluster]\nreplica = {_toml_str(name)}\n"
            config.write_text(config.read_text() + extra + f"redis_url = {_toml_str(redis_url)}\n")
            ports[name] = free_port()
            args = gateway_args(config, "--transport", "http", "--port", str(ports[name]))
            pids.append(
                stack.enter_context(background([PYTHON, *args], tmp / f"{name}.log", port=ports[name])).pid
            )
        port = free_port()
        args = gateway_args(single, "--transport", "http", "--port", str(port))
        one_pid = stack.enter_context(background([PYTHON, *args], tmp / "single.log", port=port)).pid
        balancer = stack.enter_context(nginx(tmp / "nginx", ports))
        async with (
            http_client_of(f"http://127.0.0.1:{port}/mcp", "auto") as one,
            http_client_of(f"http://127.0.0.1:{balancer}/mcp", "auto") as three,
        ):
            await check_echo(one, "up__echo")
            await check_echo(three, "up__echo")
            d_call, g_call = echo_call(one, "up__echo"), echo_call(three, "up__echo")
            d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
            tp = await throughputs(
                d_call, g_call, s.rounds, s.per_round, cpu_of={"direct": [one_pid], "gateway": pids}
            )
    ds, gs = summary(d_lat), summary(g_lat)
    note = (
        "'direct' = one replica on SQLite; 'gateway' = three on PostgreSQL/Redis behind nginx, durable = all"
    )
    results.add(
        Row(
            "cluster: call p50", "ms", ds["p50_ms"], gs["p50_ms"], note=note, samples={"one": ds, "three": gs}
        )
    )
    results.add(
        Row(
            f"cluster: throughput x{INFLIGHT}",
            "calls/s",
            statistics.median(tp.direct),
            statistics.median(tp.gateway),
            note=note,
            samples={"one": tp.direct, "three": tp.gateway},
        )
    )
    results.add(
        Row(
            "cluster: gateways' CPU per call",
            "ms",
            tp.cpu_ms.get("direct"),
            tp.cpu_ms.get("gateway"),
            note="the replicas' own processes (not nginx, Redis or PostgreSQL); " + note,
        )
    )
    reap(str(tmp))


async def bench_cli(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """`mcpgw --version` and `--help` against the bare interpreter's start (`python -c pass`)."""
    reps = 5 if s.calls < 100 else 15
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def timed(args: list[str]) -> tuple[float, float]:
        """Wall seconds and CPU seconds (user + system) of one run to its end."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([PYTHON, *args], env=env, stdout=subprocess.DEVNULL, stderr=errlog, check=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    for flag in ("--version", "--help"):
        timed(["-m", "mcpgw", flag])  # untimed: the first run also compiles and warms the page cache
        bare: list[tuple[float, float]] = []
        ours: list[tuple[float, float]] = []
        for _ in range(reps):  # alternating, so machine noise hits both alike
            bare.append(timed(["-c", "pass"]))
            ours.append(timed(["-m", "mcpgw", flag]))
        for i, what, target in ((0, "wall", "<= 250 ms"), (1, "CPU", "-")):
            b, o = summary([x[i] for x in bare]), summary([x[i] for x in ours])
            results.add(
                Row(
                    f"mcpgw {flag} ({what})",
                    "ms",
                    b["p50_ms"],
                    o["p50_ms"],
                    target,
                    note="'direct' is `python -c pass`, the interpreter's own start; CPU time does "
                    "not grow with the machine's load, wall time does",
                    samples={"bare_s": [x[i] for x in bare], "mcpgw_s": [x[i] for x in ours]},
                )
            )


def on_off_rows(
    results: Results,
    what: str,
    off: dict[str, float],
    on: dict[str, float],
    tp: Any,
    *,
    target: str,
    note: str,
    throughput_note: str,
    cpu_note: str = "the gateway process's user+system CPU over the throughput rounds",
) -> None:
    """The three rows of a feature measured on vs off in one run (the same gateway with and without
    it): call p50, throughput with INFLIGHT calls in flight, and the gateway process's CPU per call."""
    results.add(
        Row(f"{what} on vs off: stdio call p50", "ms", off["p50_ms"], on["p50_ms"], target, note=note)
    )
    results.add(
        Row(
            f"{what} off vs on: throughput x{INFLIGHT}",
            "calls/s",
            statistics.median(tp.gateway),
            statistics.median(tp.direct),
            target,
            note=throughput_note,
        )
    )
    results.add(
        Row(
            f"{what} on vs off: gateway CPU per call",
            "ms",
            tp.cpu_ms.get("direct"),
            tp.cpu_ms.get("gateway"),
            target,
            note=cpu_note,
            samples=dict(tp.cpu_ms),
        )
    )


async def bench_metrics(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """The cost of Prometheus metrics on the call path: the same stdio gateway with and without them."""
    off = write_registry(tmp / "metrics-off.toml", {"up": stdio_entry("metrics-off")})
    on = write_registry(tmp / "metrics-on.toml", {"up": stdio_entry("metrics-on")})
    for config in (off, on):  # no audit log on either side: the ratio is the metrics' alone
        config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    port = free_port()
    async with (
        stdio_client_of(gateway_args(off), s.mode, errlog) as without,
        stdio_client_of(gateway_args(on, "--metrics-port", str(port)), s.mode, errlog) as with_metrics,
    ):
        await check_echo(without, "up__echo")
        await check_echo(with_metrics, "up__echo")
        d_call, g_call = echo_call(without, "up__echo"), echo_call(with_metrics, "up__echo")
        d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
        # The gateway processes' own CPU per call: the figure least moved by other load on the machine.
        cpu_of = {"direct": [find_gateway_pid(off)], "gateway": [find_gateway_pid(on)]}
        tp = await throughputs(d_call, g_call, s.rounds, s.per_round, cpu_of=cpu_of)
        counted = _scrape_count(port)
    # check_echo's call, the warm-ups and the measured calls: each counted once, none lost.
    expected = 1 + s.warmup + s.calls + 2 * INFLIGHT + s.rounds * s.per_round
    if counted != expected:
        raise RuntimeError(f"the metrics counted {counted:g} calls; {expected} were made")
    ds, gs = summary(d_lat), summary(g_lat)
    note = "'direct' here is the same gateway without metrics (audit off on both sides)"
    on_off_rows(
        results,
        "metrics",
        ds,
        gs,
        tp,
        target="<= 1.05x",
        note=note,
        throughput_note="ratio = calls/s with metrics off / with metrics on",
    )
    reap(str(off))
    reap(str(on))


def _scrape_count(port: int) -> float:
    """`tools/call` requests the gateway counted, from its own /metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mcpgw_requests_total{") and 'method="tools/call"' in line
    )


async def bench_traces(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """The cost of OpenTelemetry traces on the call path: the same stdio gateway tracing every call
    (exported over OTLP/HTTP to a receiver in this process) and not tracing; and, when off, what the
    tracing hooks cost per call in this process."""
    sys.path.insert(0, str(ROOT / "tests"))
    from otlp import receiving

    off = write_registry(tmp / "traces-off.toml", {"up": stdio_entry("traces-off")})
    on = write_registry(tmp / "traces-on.toml", {"up": stdio_entry("traces-on")})
    for config in (off, on):  # no audit log on either side: the ratio is the traces' alone
        config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    on.write_text(on.read_text() + "\n[telemetry]\ntraces = true\n")
    with receiving() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base}
        async with (
            stdio_client_of(gateway_args(off), s.mode, errlog) as without,
            stdio_client_of(gateway_args(on), s.mode, errlog, env=env) as traced,
        ):
            await check_echo(without, "up__echo")
            await check_echo(traced, "up__echo")
            d_call, g_call = echo_call(without, "up__echo"), echo_call(traced, "up__echo")
            d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
            cpu_of = {"direct": [find_gateway_pid(off)], "gateway": [find_gateway_pid(on)]}
            tp = await throughputs(d_call, g_call, s.rounds, s.per_round, cpu_of=cpu_of)
        # The gateway sends what is left as it stops: every call is one request span, none lost.
        expected = 1 + s.warmup + s.calls + 2 * INFLIGHT + s.rounds * s.per_round
        spans = receiver.wait_for(
            lambda spans: sum(sp.name == "tools/call up__echo" for sp in spans) >= expected, timeout=120
        )
    counted = sum(sp.name == "tools/call up__echo" for sp in spans)
    if counted != expected:
        raise RuntimeError(f"{counted} request spans arrived; {expected} calls were made")
    ds, gs = summary(d_lat), summary(g_lat)
    note = "'direct' here is the same gateway not tracing (audit off on both sides); on: every call sampled"
    on_off_rows(
        results,
        "traces",
        ds,
        gs,
        tp,
        target="-",
        note=note,
        throughput_note=f"ratio = calls/s off / on; {len(spans)} spans exported for {expected} calls",
    )
    hooks_us = _tracing_hooks_off_us()
    results.add(
        Row(
            "traces off: hooks per call vs call p50",
            "us",
            ds["p50_ms"] * 1000,
            hooks_us,
            "<= 0.01x",
            note="what the call path's tracing hooks cost while off (timed in this process)",
        )
    )
    reap(str(off))
    reap(str(on))


def _tracing_hooks_off_us() -> float:
    """Microseconds per call that the tracing hooks of one `tools/call` take while tracing is off:
    the request span, both data-rule stages' checks, the upstream call's span, the captured context."""
    import timeit

    from mcpgw.core.pipeline import Target, upstream_span
    from mcpgw.observe import tracing

    assert not tracing.on()
    target = Target(persona=None, rule_name="up__echo", method="tools/call")

    def one_call() -> None:
        with tracing.request("tools/call", target="up__echo", meta=None, headers=None, attributes={}):
            tracing.on()
            tracing.on()
            with upstream_span(target):
                tracing.context()
            tracing.on()

    runs = 20_000
    return min(timeit.repeat(one_call, number=runs, repeat=5)) / runs * 1e6


FLOW_VALUES = 2000
"""Private values the flows gateway's session holds when the measured calls start."""


async def bench_flows(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """The cost of flow policies on the call path: the same stdio gateway with and without them.

    `echo` is labelled private and egress, so every measured call is checked against the session's
    fingerprints before it goes and fingerprinted after; the session already holds `FLOW_VALUES`
    private values (one big echo first). Audit off on both sides: the ratio is the policies' alone.
    """
    off = write_registry(tmp / "flows-off.toml", {"up": stdio_entry("flows-off")})
    on = write_registry(tmp / "flows-on.toml", {"up": stdio_entry("flows-on")})
    off.write_text(off.read_text() + "\n[audit]\nenabled = false\n")
    on.write_text(
        on.read_text().replace("[servers.up]", '[servers.up]\ntool_labels = { echo = ["private", "egress"] }')
        + "\n[audit]\nenabled = false\n\n[security.flows]\n"
    )
    record = "\n".join(f"Account {i}: ACC-{i:06d}-{i * 7919 % 100000:05d}" for i in range(FLOW_VALUES))
    async with (
        stdio_client_of(gateway_args(off), s.mode, errlog) as without,
        stdio_client_of(gateway_args(on), s.mode, errlog) as with_flows,
    ):
        await check_echo(without, "up__echo")
        await check_echo(with_flows, "up__echo")
        loaded = await with_flows.call_tool("up__echo", {"message": record})
        last = FLOW_VALUES - 1  # the newest value: the session keeps the most recent 5000 fingerprints
        refused = await with_flows.call_tool(
            "up__echo", {"message": f"ACC-{last:06d}-{last * 7919 % 100000:05d}"}
        )
        if loaded.is_error or not refused.is_error:
            raise RuntimeError("the flows gateway did not refuse a private value sent back out")
        d_call, g_call = echo_call(without, "up__echo"), echo_call(with_flows, "up__echo")
        d_lat, g_lat = await latencies(d_call, g_call, s.calls, s.warmup)
        cpu_of = {"direct": [find_gateway_pid(off)], "gateway": [find_gateway_pid(on)]}
        tp = await throughputs(d_call, g_call, s.rounds, s.per_round, cpu_of=cpu_of)
    ds, gs = summary(d_lat), summary(g_lat)
    note = "'direct' here is the same gateway without [security.flows] (audit off on both sides)"
    on_off_rows(
        results,
        "flows",
        ds,
        gs,
        tp,
        target="<= 1.05x",
        note=note,
        throughput_note="ratio = calls/s with flow policies off / on",
        cpu_note=f"the gateway process's CPU over the throughput rounds; {FLOW_VALUES} private values held",
    )
    reap(str(off))
    reap(str(on))


REDACT_BYTES = 1_000_000


async def bench_redact(s: Settings, tmp: Path, results: Results, errlog: IO[str]) -> None:
    """The cost of data rules on big results: 1 MB text results through a gateway with and without them."""
    off = write_registry(tmp / "redact-off.toml", {"up": stdio_entry("redact-off", "--lorem")})
    on = write_registry(tmp / "redact-on.toml", {"up": stdio_entry("redact-on", "--lorem")})
    # Every built-in detector redacts results: the text has an e-mail address and a card number per ~1 kB.
    names = ["aws-key", "github-token", "slack-token", "private-key", "jwt", "bearer", "url-password"]
    detectors = ", ".join(_toml_str(d) for d in [*names, "card", "email"])
    on.write_text(
        on.read_text() + f'\n[[security.rules]]\ndetectors = [{detectors}]\naction = "redact"\n'
        'directions = ["results"]\n'
    )
    async with (
        stdio_client_of(gateway_args(off), s.mode, errlog) as without,
        stdio_client_of(gateway_args(on), s.mode, errlog) as guarded,
    ):
        await check_echo(without, "up__echo")
        await check_echo(guarded, "up__echo")

        def big(client: Client) -> Call:
            async def call() -> None:
                result = await client.call_tool("up__lorem", {"size": REDACT_BYTES})
                text = getattr(result.content[0], "text", "") if result.content else ""
                if result.is_error or len(text) < REDACT_BYTES // 2:
                    raise RuntimeError(f"up__lorem returned {str(result.content)[:200]}")

            return call

        plain = (await without.call_tool("up__lorem", {"size": 2000})).content[0]
        redacted = (await guarded.call_tool("up__lorem", {"size": 2000})).content[0]
        if "[REDACTED:email]" not in getattr(redacted, "text", "") or "[REDACTED" in getattr(
            plain, "text", ""
        ):
            raise RuntimeError("the guarded gateway did not redact, or the plain one did")
        calls, warmup = max(10, s.calls // 15), 3
        d_lat, g_lat = await latencies(big(without), big(guarded), calls, warmup, collect_every=5)
        tp = await throughputs(big(without), big(guarded), max(2, s.rounds // 2), INFLIGHT * 2)
    ds, gs = summary(d_lat), summary(g_lat)
    note = "'direct' here is the same gateway without data rules; results are 1 MB of text"
    results.add(Row("redaction on vs off: 1 MB result p50", "ms", ds["p50_ms"], gs["p50_ms"], note=note))
    results.add(
        Row(
            f"redaction off vs on: 1 MB results throughput x{INFLIGHT}",
            "calls/s",
            statistics.median(tp.gateway),
            statistics.median(tp.direct),
            note="ratio = calls/s without data rules / with every detector redacting results",
            samples={"without_rounds": tp.direct, "with_rounds": tp.gateway},
        )
    )


async def run(s: Settings, sections: list[str], results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix=f"{TOKEN}-") as tmpdir:
        tmp = Path(tmpdir)
        # The gateways under test log to a database of their own, never to the user's.
        os.environ["MCPGW_AUDIT_DB"] = str(tmp / "audit.db")
        with (tmp / "stderr.log").open("w") as errlog:
            plan = {
                "audit": lambda: bench_audit(s, tmp, results, errlog),
                "audit-pg": lambda: bench_audit_pg(s, tmp, results, errlog),
                "metrics": lambda: bench_metrics(s, tmp, results, errlog),
                "traces": lambda: bench_traces(s, tmp, results, errlog),
                "redact": lambda: bench_redact(s, tmp, results, errlog),
                "flows": lambda: bench_flows(s, tmp, results, errlog),
                "stdio": lambda: bench_stdio(s, tmp, results, errlog),
                "http": lambda: bench_http(s, tmp, results),
                # bench/floor.py: the same with a bare and a parsing relay in the gateway's place
                "floor": lambda: floor.bench_floor(sys.modules[__name__], s, tmp, results, errlog),
                "list": lambda: bench_big_list(s, tmp, results, errlog),
                "cold": lambda: bench_cold_start(s, tmp, results, errlog),
                "cli": lambda: bench_cli(s, tmp, results, errlog),
                "openapi": lambda: bench_openapi(s, tmp, results, errlog),
                # bench/startup.py: start-up, memory and peers (it uses this module's helpers)
                "start": lambda: startup.bench_start(sys.modules[__name__], s, tmp, results, errlog),
                "rss": lambda: startup.bench_rss(sys.modules[__name__], s, tmp, results, errlog),
                "peers": lambda: startup.bench_peers(sys.modules[__name__], s, tmp, results, errlog),
                "cluster": lambda: bench_cluster(s, tmp, results),
            }
            for name in sections:
                print(f"[{name}]", flush=True)
                started = time.perf_counter()
                try:
                    await plan[name]()
                except Exception as exc:
                    results.errors[name] = innermost(exc)
                    traceback.print_exc()
                    for log in sorted(tmp.glob("*.log")):
                        tail = log.read_text(errors="replace").splitlines()[-15:]
                        if tail:
                            print(f"--- last lines of {log.name}:\n" + "\n".join(tail), file=sys.stderr)
                finally:
                    reap(TOKEN, timeout=5.0)
                results.info.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    sections = args.only or list(SECTIONS)
    if args.profile is not None:
        sections = [args.profile]
    results = Results()
    results.info.update(
        mode=s.mode,
        settings=s.__dict__,
        python=platform.python_version(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    print(
        f"mcpgw benchmark: mode={s.mode}, {s.calls} sequential calls (+{s.warmup} warm-up), "
        f"{s.rounds}x{s.per_round} calls at {INFLIGHT} in flight, {s.cold_reps} cold starts, "
        f"{s.list_reps} big listings; {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.perf_counter()
    profiling = tempfile.TemporaryDirectory(prefix=f"{TOKEN}-profile-")
    global PROFILER
    PROFILER = startup.Profiler(sys.modules[__name__], Path(profiling.name)) if args.profile else None
    try:
        if PROFILER is not None:
            with PROFILER:
                anyio.run(run, s, sections, results, backend="asyncio")
        else:
            anyio.run(run, s, sections, results, backend="asyncio")
    finally:
        reap(TOKEN, timeout=5.0)  # belt and braces: nothing of ours survives the run
    results.info["total_seconds"] = round(time.perf_counter() - started, 1)
    for key in ("stdio_protocol", "http_protocol"):
        if key in results.info:
            print(
                f"  negotiated {key.split('_')[0]}: direct {results.info[key]['direct']}, "
                f"gateway {results.info[key]['gateway']}"
            )
    print_table(results)
    if PROFILER is not None:
        PROFILER.report()
    profiling.cleanup()
    print(f"\ntotal {results.info['total_seconds']} s")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"info": results.info, "rows": [r.as_json() for r in results.rows], "errors": results.errors},
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.json}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
