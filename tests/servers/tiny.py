"""A minimal MCP server over stdio (handshake era), standard library only.

For fault tests that restart an upstream a hundred times: it starts in tens of
milliseconds where a FastMCP server takes about a second, so the test measures
the gateway's supervision, not Python imports. It speaks real JSON-RPC lines.

Tools: `echo(message)`, `pid()`, `sleep(seconds)` (answered from a thread, so
several can be in flight), `peak()` (the most `sleep` calls ever in flight at once),
`big(size)` (a text of `size` characters), `fail(code, message)` (that JSON-RPC error
as the answer), `block(seconds)` (busy: answers nothing, not even pings, meanwhile).
With `$TINY_SLEEP_LOG`, each `sleep` appends one line there as it starts,
so a test can wait for a call to be in flight instead of sleeping.

`--discover MODE` is how it meets a `server/discover` probe, as servers on old SDKs do: `error`
(-32601, the default), `crash` (exits with a traceback, as mcp 1.6-1.8 servers do), `close` (closes
stdout and lingers), `silent` (never answers it; serves the rest). With `$TINY_PROBE_LOG`, each probe
appends a line there. `--linger` keeps the process alive after stdin closes, as servers whose other
threads keep running do. `--gate PATH` is a server slow to start: it reads nothing until PATH exists.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

_write_lock = threading.Lock()
_active = 0
_peak = 0
_count_lock = threading.Lock()

TOOLS = [
    {"name": n, "description": d, "inputSchema": {"type": "object", "properties": p}}
    for n, d, p in [
        ("echo", "Echo a message.", {"message": {"type": "string"}}),
        ("pid", "The server's process id.", {}),
        ("sleep", "Sleep, then answer.", {"seconds": {"type": "number"}}),
        ("peak", "Most sleep calls in flight at once.", {}),
        ("big", "A long text.", {"size": {"type": "integer"}}),
        (
            "fail",
            "Answer with this JSON-RPC error.",
            {"code": {"type": "integer"}, "message": {"type": "string"}},
        ),
        ("block", "Block the whole server (pings too), then answer.", {"seconds": {"type": "number"}}),
    ]
]


def send(message: dict[str, Any]) -> None:
    with _write_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": False}


def sleep_then_answer(request_id: Any, seconds: float) -> None:
    global _active, _peak
    with _count_lock:
        _active += 1
        _peak = max(_peak, _active)
    if log := os.environ.get("TINY_SLEEP_LOG"):
        with open(log, "a") as handle:
            handle.write(f"{request_id}\n")
    time.sleep(seconds)
    with _count_lock:
        _active -= 1
    send({"jsonrpc": "2.0", "id": request_id, "result": text(f"slept {seconds}")})


def call(request_id: Any, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
    if name == "echo":
        return text(str(arguments.get("message", "")))
    if name == "pid":
        return {**text(str(os.getpid())), "structuredContent": {"result": os.getpid()}}
    if name == "sleep":
        seconds = float(arguments.get("seconds", 1))
        threading.Thread(target=sleep_then_answer, args=(request_id, seconds), daemon=True).start()
        return None
    if name == "peak":
        return text(str(_peak))
    if name == "block":  # in the main loop: nothing else, not even a ping, is answered meanwhile
        time.sleep(float(arguments.get("seconds", 1)))
        return text(f"blocked {arguments.get('seconds', 1)}")
    if name == "big":
        return text("x" * int(arguments.get("size", 0)))
    return {"content": [{"type": "text", "text": f"Unknown tool: {name}"}], "isError": True}


def _option(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def probed(mode: str) -> bool:
    """Meet a `server/discover` probe as `mode` says; True when it was answered here (or ignored)."""
    if log := os.environ.get("TINY_PROBE_LOG"):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    if mode == "crash":
        raise RuntimeError("unknown request method: server/discover")
    if mode == "close":
        os.close(sys.stdout.fileno())
        time.sleep(3600)
    return mode == "silent"


def main() -> None:
    discover = _option("--discover") or "error"
    gate = _option("--gate")
    while gate is not None and not os.path.exists(gate):
        time.sleep(0.02)
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue  # notifications (initialized, cancelled) need no answer
        params = message.get("params") or {}
        result: dict[str, Any] | None
        if method == "server/discover" and probed(discover):
            continue
        if method == "initialize":
            result = {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "tiny", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": TOOLS}
        elif (
            method == "tools/call" and params.get("name") == "fail"
        ):  # an error reply, as a hostile server may
            arguments = params.get("arguments") or {}
            error = {"code": int(arguments.get("code", -32000)), "message": str(arguments.get("message", ""))}
            send({"jsonrpc": "2.0", "id": request_id, "error": error})
            continue
        elif method == "tools/call":
            result = call(request_id, params.get("name", ""), params.get("arguments") or {})
            if result is None:
                continue
        elif method == "ping":
            result = {}
        else:
            send(
                {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}}
            )
            continue
        send({"jsonrpc": "2.0", "id": request_id, "result": result})


if __name__ == "__main__":
    main()
    if "--linger" in sys.argv:  # stdin is closed; the process is not done
        time.sleep(3600)
