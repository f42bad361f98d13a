"""In-process microbench of the gateway's own CPU per forwarded 2026-07-28 HTTP call (the ASGI app and below).

Builds the gateway's whole HTTP app (`http.http_app`: Host check, body and rate limits, `/mcp` past
the router, the lean stateless path, the pipeline) in this process with the test upstream served
over HTTP by another process (`tests/servers/upstream.py --http`), runs the app's lifespan, then
drives one `tools/call` POST through ASGI again and again (no client, no uvicorn, no socket on the
client side; the upstream is reached over loopback as in `mcpgw serve`). Prints this process's CPU
per call: the minimum, first quartile and median of ROUNDS rounds of N calls (on a shared machine
the minimum moves least).

    PYTHONPATH=src .venv/bin/python bench/httplane.py             # N=500 calls a round, 8 rounds, audit on
    AUDIT=0 PYTHONPATH=src .venv/bin/python bench/httplane.py
    PROF=tottime PYTHONPATH=src .venv/bin/python bench/httplane.py  # a CPU-time cProfile of the last round
    PROF=count PYTHONPATH=src .venv/bin/python bench/httplane.py    # function calls per request, by package
    PROF=tottime DUMP=h.pstats PYTHONPATH=src .venv/bin/python bench/httplane.py  # kept for pstats

Run it on two commits back to back: the difference is what a change saved per call.
"""

from __future__ import annotations

import collections
import cProfile
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mcpgw.assembly import build_gateway  # noqa: E402
from mcpgw.audit import AuditLog  # noqa: E402
from mcpgw.config import validate  # noqa: E402
from mcpgw.server.http import http_app  # noqa: E402
from parity import asgi_lifespan  # noqa: E402

N = int(os.environ.get("N", "500"))
ROUNDS = int(os.environ.get("ROUNDS", "8"))
AUDIT = os.environ.get("AUDIT", "1") == "1"
PROF = os.environ.get("PROF")
MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "httplane", "version": "1"},
}
BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "up__echo", "arguments": {"message": "ping"}, "_meta": ENVELOPE},
    }
).encode()
HEADERS = [
    (k.encode(), v.encode())
    for k, v in {
        "host": "127.0.0.1:8000",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": "up__echo",
        "user-agent": "python-httpx/0.28.1",
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "content-length": str(len(BODY)),
    }.items()
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def call(app: Any) -> None:
    """One POST through the whole app, as uvicorn hands it on."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "headers": list(HEADERS),
        "state": {},
    }
    read = False
    done = anyio.Event()
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(scope, receive, send)
    done.set()
    assert out[0]["status"] == 200 and b"ping" in out[-1]["body"], out


def by_package(profile: cProfile.Profile) -> None:
    stats = pstats.Stats(profile)
    print(f"function calls per request: {stats.total_calls / N:.0f}")  # type: ignore[attr-defined]
    counts: collections.Counter[str] = collections.Counter()
    for (filename, _, _), (_, calls, _, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = filename.split("site-packages/")[-1].split("/src/")[-1]
        counts[key.split("/")[0] if "mcpgw" not in key else "/".join(key.split("/")[:3])] += calls
    for key, calls in counts.most_common(25):
        print(f"  {calls / N:7.1f} {'(built-in functions)' if key == '~' else key or '(other)'}")


async def main() -> None:
    port = free_port()
    upstream = ROOT / "tests" / "servers" / "upstream.py"
    process = subprocess.Popen(
        [sys.executable, str(upstream), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(60):  # a hang guard: the upstream is polled until it listens
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    await anyio.sleep(0.1)
        log = AuditLog(Path(tempfile.mkdtemp()) / "audit.db").start() if AUDIT else None
        config = validate({"servers": {"up": {"url": f"http://127.0.0.1:{port}/mcp"}}}, source="httplane")
        built = build_gateway(config, audit=log)
        async with built.gateway.running():
            await built.gateway.wait_started()
            app = http_app(built.gateway, host="127.0.0.1")
            async with asgi_lifespan(app):
                for _ in range(300):  # warm-up
                    await call(app)
                rounds = []
                profile = None
                for r in range(ROUNDS):
                    profile = cProfile.Profile(time.process_time) if PROF and r == ROUNDS - 1 else None
                    cpu = time.process_time()
                    if profile is not None:
                        profile.enable()
                    for _ in range(N):
                        await call(app)
                    if profile is not None:
                        profile.disable()
                    rounds.append((time.process_time() - cpu) / N * 1e6)
                rounds.sort()
                print(
                    f"audit {'on' if AUDIT else 'off'}, {ROUNDS} rounds of {N} calls: "
                    f"min {rounds[0]:.0f} us, q1 {rounds[len(rounds) // 4]:.0f} us, "
                    f"median {rounds[len(rounds) // 2]:.0f} us CPU per call"
                )
                if profile is not None:
                    by_package(profile)
                    if PROF != "count":
                        pstats.Stats(profile).sort_stats(PROF).print_stats(50)
                        if os.environ.get("DUMP"):
                            profile.dump_stats(os.environ["DUMP"])
                        if os.environ.get("CALLEES"):
                            pstats.Stats(profile).print_callees(os.environ["CALLEES"])
        if log is not None:
            log.close()
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
