"""Where a call's wall time goes between the processes: each leg of a call, and each wake-up (Linux `perf`).

    .venv/bin/python bench/hops.py                      # stdio, 600 calls each way
    .venv/bin/python bench/hops.py --transport http --calls 400

The mcp Client calls the test upstream's `echo` directly and through `mcpgw serve`, call by call in
turn, and marks each call with a write to /dev/null. Meanwhile `perf record` takes the processes' read
and write system calls and the scheduler's wake-ups and switches (needs root, or
`kernel.perf_event_paranoid` <= -1). Printed, as medians over the calls:

- the legs of a call: from the client's write of the request to the server's read of it, the server's
  own time to its write, and so on back to the client. The gateway's two legs (request read to
  upstream write, answer read to client write) are its part of the critical path; the hops between
  processes are the system's.
- each wake-up: from a process being woken (by the write of the process before it) to its running,
  and how often it was woken onto the CPU of the process that woke it (a pipe or socket write wakes
  its reader "synchronously", on the writer's CPU: it then waits until the writer sleeps).

The bench's ratios say how much more a call costs through the gateway; this says where. Measured on
2 cores (a VM), one run each:

- stdio: direct 1,247 us mark to mark, through the gateway 1,460. The upstream's own leg was the same
  either way (936 and 906 us); the gateway's legs were 108 us (request read to upstream write) and
  56 us (answer read to client write), all of it on the CPU; each of its two extra hops 20-40 us.
- HTTP: direct 1,597 us, through the gateway 2,105. The gateway's request leg was 263 us (it includes
  waiting for the client's body, which the client writes after its head), its answer leg 99 us; and
  the gateway, woken by the upstream's answer onto the upstream's CPU in 69% of calls, waited a
  median 93 us there while the upstream finished its own work after writing (a socket write wakes its
  reader as if the writer were about to sleep), where the client reached directly was woken onto the
  other CPU (9%) and ran within 3 us.

Not a test and not part of `bench/run.py`: a diagnostic for changing the forward path.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import anyio

import run as h  # bench/run.py: registries, clients, processes

WARMUP = 200
"""Calls each way before perf looks."""
MARK, END = b"MARK!", b"END!"
"""Written to /dev/null around each call: 5 and 4 bytes, told apart by their length."""
EVENTS = (
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_exit_read",
    "syscalls:sys_exit_recvfrom",
    "sched:sched_wakeup",
    "sched:sched_switch",
)
_LINE = re.compile(r"\s*(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+\w+:(\w+):\s*(.*)")


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _filter(field: str, tids: list[int]) -> str:
    return " || ".join(f"{field} == {t}" for t in tids)


def record(owner: dict[int, int], out: Path, control: tuple[int, int]) -> subprocess.Popen[bytes]:
    """`perf record` of the threads in `owner` (thread id: process id), their I/O and scheduling,
    system-wide but filtered to them; its events off until `enabled` turns them on through `control`
    (perf's control and ack descriptors)."""
    tids = sorted(owner)
    command = [
        "perf",
        "record",
        "-q",
        "-a",
        "-o",
        str(out),
        "-D",
        "-1",
        "--control",
        f"fd:{control[0]},{control[1]}",
    ]
    for event in EVENTS:
        field = "pid" if event == "sched:sched_wakeup" else "common_pid"
        condition = _filter(field, tids)
        if event == "sched:sched_switch":
            condition = f"{_filter('prev_pid', tids)} || {_filter('next_pid', tids)}"
        command += ["-e", event, "--filter", condition]
    return subprocess.Popen(command, stderr=subprocess.PIPE, pass_fds=control)


def enabled(recorder: subprocess.Popen[bytes], control: int, ack: int, *, timeout: float = 60.0) -> bool:
    """perf's events turned on, and perf's word that they are (not a wait that hopes it has attached);
    False if perf ended first or did not answer within `timeout`."""
    os.write(control, b"enable\n")
    deadline = time.monotonic() + timeout
    while recorder.poll() is None and time.monotonic() < deadline:
        if select.select([ack], [], [], 0.05)[0]:
            return os.read(ack, 16).startswith(b"ack")
    return False


def read_events(data: Path) -> list[tuple[float, int, int, str, int, Any]]:
    """(time in us, pid, tid, kind, cpu, detail): kind `w` (a write: fd, bytes), `r` (a read: bytes),
    `wake` (woken tid, target cpu), `switch` (previous tid, next tid)."""
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,tid,cpu,time,event,trace"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    events: list[tuple[float, int, int, str, int, Any]] = []
    for line in script.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        pid, tid, cpu, when, name, rest = int(m[1]), int(m[2]), int(m[3]), float(m[4]) * 1e6, m[5], m[6]
        if name.startswith("sys_enter_"):
            fd = int(re.search(r"fd: (0x[0-9a-f]+)", rest)[1], 16)  # type: ignore[index]
            size = re.search(r"(?:count|len): (0x[0-9a-f]+)", rest)
            length = int(size[1], 16) if size and name != "sys_enter_writev" else 1 << 20
            events.append((when, pid, tid, "w", cpu, (fd, length)))
        elif name.startswith("sys_exit_"):
            value = int(rest.strip(), 16)
            if 0 < value < 1 << 40:  # not an error (a negative value, printed as a large one)
                events.append((when, pid, tid, "r", cpu, value))
        elif name == "sched_wakeup":
            woken = int(re.search(r" pid=(\d+)", rest)[1])  # type: ignore[index]
            target = int(re.search(r"target_cpu=(\d+)", rest)[1])  # type: ignore[index]
            events.append((when, pid, tid, "wake", cpu, (woken, target)))
        elif name == "sched_switch":
            prev = int(re.search(r"prev_pid=(\d+)", rest)[1])  # type: ignore[index]
            nxt = int(re.search(r"next_pid=(\d+)", rest)[1])  # type: ignore[index]
            events.append((when, pid, tid, "switch", cpu, (prev, nxt)))
    events.sort(key=lambda e: e[0])
    return events


def analyse(
    events: list[Any], roles: dict[str, int], owner: dict[int, int], null_fd: int
) -> dict[str, dict[str, list[float]]]:
    """Per path ('direct', 'gateway'): each leg's and each wake-up's durations over the calls (`owner`:
    the roles' thread ids, each to its process id)."""
    client = roles["client"]
    marks = [e for e in events if e[2] == client and e[3] == "w" and e[5][0] == null_fd]
    pairs = itertools.pairwise(marks)
    calls = [(a[0], b[0]) for a, b in pairs if a[5][1] == len(MARK) and b[5][1] == len(END)]
    times = [e[0] for e in events]
    out: dict[str, dict[str, list[float]]] = {"direct": defaultdict(list), "gateway": defaultdict(list)}

    def io(seg: list[Any], after: float | None, pid: int, kind: str, *, main: bool) -> Any:
        """The first read or write of 8 bytes or more by `pid` (its main thread only, with `main`)."""
        if after is None:
            return None
        for e in seg:
            if e[0] < after or e[3] != kind or e[1] != pid or (main and e[2] != pid):
                continue
            if (e[5][1] if kind == "w" else e[5]) >= 8 and not (kind == "w" and e[5][0] == null_fd):
                return e
        return None

    def woke(
        seg: list[Any], after: float, pid: int, waker_cpu: int, *, main: bool
    ) -> tuple[float, bool] | None:
        """The first wake-up of a thread of `pid` (its main thread, with `main`) after `after`: how long
        until it ran, and whether it was woken onto `waker_cpu`."""
        for e in seg:
            if e[0] < after or e[3] != "wake" or (e[5][0] != pid if main else owner.get(e[5][0]) != pid):
                continue
            for s in seg:
                if s[0] >= e[0] and s[3] == "switch" and s[5][1] == e[5][0]:
                    return s[0] - e[0], e[5][1] == waker_cpu
            return None
        return None

    for start, end in calls:
        seg = events[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]
        sent = io(seg, start, client, "w", main=True)
        if sent is None:
            continue
        path = "gateway" if io(seg, sent[0], roles["gateway"], "r", main=True) is not None else "direct"
        if path == "gateway":
            chain = [("gateway", True), ("gateway upstream", False), ("gateway", True), ("client", True)]
        else:
            chain = [("direct upstream", False), ("client", True)]
        found: dict[str, float] = {}
        last, last_name = sent, "client"
        for name, main in chain:
            pid = roles[name]
            short = "upstream" if name.endswith("upstream") else name
            got = io(seg, last[0], pid, "r", main=main)
            if got is None:
                break
            found[f"{last_name} write -> {short} read"] = got[0] - last[0]
            wake = woke(seg, last[0], pid, last[4], main=main)
            if wake is not None:
                found[f"wake-up {last_name} -> {short}: woken -> running"] = wake[0]
                found[f"wake-up {last_name} -> {short}: onto the waker's CPU (share)"] = float(wake[1])
            if name == "client":  # the answer is back: the call is whole
                found["call, mark to mark"] = end - start
                for key, value in found.items():
                    out[path][key].append(value)
                break
            answered = io(seg, got[0], pid, "w", main=main)
            if answered is None:
                break
            leg = f"{short} read -> write"
            found[f"{leg} (answer)" if leg in found else leg] = answered[0] - got[0]  # the gateway's second
            last, last_name = answered, short
    return out


def report(found: dict[str, dict[str, list[float]]], transport: str) -> None:
    for path in ("direct", "gateway"):
        rows = found[path]
        n = len(rows.get("call, mark to mark", []))
        print(f"\n{transport}, {path}: {n} calls (medians, microseconds)")
        for name, values in rows.items():
            if "share" in name:
                print(f"  {name:58s} {100 * statistics.mean(values):6.0f}%")
            else:
                print(f"  {name:58s} {statistics.median(values):8.1f}")


async def main(args: argparse.Namespace) -> int:
    if shutil.which("perf") is None:
        print("bench/hops.py needs Linux `perf` (Debian: linux-perf)", file=sys.stderr)
        return 2
    null_fd = os.open(os.devnull, os.O_WRONLY)
    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"{h.TOKEN}-") as tmpdir,
            ExitStack() as processes,
            (Path(tmpdir) / "stderr.log").open("w") as errlog,
        ):
            tmp = Path(tmpdir)
            os.environ["MCPGW_AUDIT_DB"] = str(tmp / "audit.db")
            async with AsyncExitStack() as clients:
                if args.transport == "stdio":
                    config = h.write_registry(tmp / "hops.toml", {"up": h.stdio_entry("hops-gw")})
                    direct = await clients.enter_async_context(
                        h.stdio_client_of(h.upstream_args("hops-direct"), "auto", errlog)
                    )
                    gateway = await clients.enter_async_context(
                        h.stdio_client_of(h.gateway_args(config), "auto", errlog)
                    )
                else:
                    up_d, up_g, gw_port = h.free_port(), h.free_port(), h.free_port()
                    url = f"http://127.0.0.1:{up_g}/mcp"
                    config = h.write_registry(tmp / "hops.toml", {"up": {"url": url}})

                    def started(command: list[str], port: int) -> int:
                        return processes.enter_context(
                            h.background(command, tmp / f"{port}.log", port=port)
                        ).pid

                    roles = {
                        "direct upstream": started(
                            [h.PYTHON, *h.upstream_args("hops-d", "--http", str(up_d))], up_d
                        ),
                        "gateway upstream": started(
                            [h.PYTHON, *h.upstream_args("hops-g", "--http", str(up_g))], up_g
                        ),
                        "gateway": started(
                            [
                                h.PYTHON,
                                *h.gateway_args(config, "--transport", "http", "--port", str(gw_port)),
                            ],
                            gw_port,
                        ),
                    }
                    direct = await clients.enter_async_context(
                        h.http_client_of(f"http://127.0.0.1:{up_d}/mcp", "auto")
                    )
                    gateway = await clients.enter_async_context(
                        h.http_client_of(f"http://127.0.0.1:{gw_port}/mcp", "auto")
                    )
                await h.check_echo(direct, "echo")
                await h.check_echo(gateway, "up__echo")
                if args.transport == "stdio":  # found once serving (the pre-server hands over at start)
                    roles = {
                        "direct upstream": h.the_upstream("hops-direct"),
                        "gateway upstream": h.the_upstream("hops-gw"),
                        "gateway": h.find_gateway_pid(config),
                    }
                roles["client"] = os.getpid()
                d_call, g_call = h.echo_call(direct, "echo"), h.echo_call(gateway, "up__echo")
                await h.latencies(d_call, g_call, 0, WARMUP)  # warm-up only, before perf looks
                # Every thread of the roles, once: for perf's filter and to tell whose wake-up is whose.
                owner = {tid: pid for pid in roles.values() for tid in _threads(pid)}
                data = tmp / "perf.data"
                control, ack = os.pipe(), os.pipe()
                recorder = record(owner, data, (control[0], ack[1]))
                if not enabled(recorder, control[1], ack[0]):
                    recorder.kill()
                    print(f"perf record failed: {recorder.communicate()[1].decode()[-500:]}", file=sys.stderr)
                    return 2

                def marked(call: h.Call) -> h.Call:
                    async def between_marks() -> None:
                        os.write(null_fd, MARK)
                        await call()
                        os.write(null_fd, END)

                    return between_marks

                # The bench's own alternation (`latencies`: direct and gateway call by call, which goes
                # first in turn, the client's garbage collector kept out of the calls).
                await h.latencies(marked(d_call), marked(g_call), args.calls, 0)
                recorder.send_signal(signal.SIGINT)  # perf writes its file and stops
                recorder.wait(60)
                report(analyse(read_events(data), roles, owner, null_fd), args.transport)
    finally:
        h.reap(h.TOKEN)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--calls", type=int, default=600, help="calls each way (default 600)")
    sys.exit(anyio.run(main, parser.parse_args()))
