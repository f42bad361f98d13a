"""servers/lite.py answers as servers/upstream.py does: the tests that use the light twin test what
they would on the FastMCP upstream.

One handshake-era session with each, over stdio, the same requests in the same order; the answers,
notifications and requests to the client (roots/list) are compared as JSON. What differs by design:
the server's version, and pydantic's argument errors, of which lite gives the first lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import LITE, PROCESS_LIMIT, UPSTREAM

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"message": "hi"}),
    ("add", {"a": 1, "b": 2}),
    ("image", {}),
    ("audio", {}),
    ("mixed", {}),
    ("fail", {}),
    ("fail", {"reason": "x"}),
    ("slow", {"steps": 2, "delay": 0.01}),
    ("sleep", {"seconds": 0.01}),
    ("pid", {}),
    ("roots", {}),
    ("echo", {}),
    ("add", {"a": "x", "b": 1}),
    ("echo", {"message": "hi", "extra": 1}),
    ("nope", {}),
]
REQUESTS: list[tuple[str, dict[str, Any] | None]] = [
    ("ping", None),
    ("tools/list", None),
    ("resources/list", None),
    ("resources/templates/list", None),
    ("prompts/list", None),
    *[("tools/call", {"name": n, "arguments": a, "_meta": {"progressToken": "t"}}) for n, a in CALLS],
    ("resources/read", {"uri": "test://static"}),
    ("resources/read", {"uri": "test://items/7"}),
    ("resources/read", {"uri": "test://nope"}),
    ("prompts/get", {"name": "greet", "arguments": {"name": "Ann"}}),
    ("prompts/get", {"name": "nope", "arguments": {}}),
    ("prompts/get", {"name": "greet", "arguments": {}}),
    (
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "name", "value": "A"}},
    ),
    ("logging/setLevel", {"level": "debug"}),
    ("resources/subscribe", {"uri": "test://static"}),
    ("tools/call", {"name": "grow", "arguments": {"tool_name": "extra"}}),
    ("tools/list", None),
    ("tools/call", {"name": "extra", "arguments": {}}),
    ("nosuch/method", {}),
]

PID_CALL = 1 + [r[1] and r[1].get("name") for r in REQUESTS].index("pid")
"""The id of the `pid` call, whose answer is the process's own."""


def session(script: Path, log: Path) -> list[Any]:
    """Every message the server wrote, in order, with what varies per process taken out."""
    seen: list[Any] = []
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "UPSTREAM_CALL_LOG": str(log)},
    )
    assert process.stdin is not None and process.stdout is not None
    try:

        def send(message: dict[str, Any]) -> None:
            assert process.stdin is not None
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()

        def ask(number: int, method: str, params: dict[str, Any] | None) -> None:
            send({"jsonrpc": "2.0", "id": number, "method": method, **({"params": params} if params else {})})
            while True:
                message = json.loads(process.stdout.readline())  # type: ignore[union-attr]
                seen.append(message)
                if message.get("id") == number and "method" not in message:
                    return
                if message.get("method") == "roots/list":
                    send({"jsonrpc": "2.0", "id": message["id"], "result": {"roots": [{"uri": "file:///r"}]}})

        hello = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"roots": {}},
            "clientInfo": {"name": "t", "version": "1"},
        }
        ask(0, "initialize", hello)
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        for number, (method, params) in enumerate(REQUESTS, start=1):
            ask(number, method, params)
    finally:
        process.stdin.close()
        process.wait(PROCESS_LIMIT)
        process.stdout.close()
    for message in seen:
        result = message.get("result", {})
        if "serverInfo" in result:
            result["serverInfo"]["version"] = "-"
        if message.get("id") == PID_CALL:
            result["content"][0]["text"] = result["structuredContent"]["result"] = "-"
        for item in result.get("content", []):  # pydantic's error text: its first lines
            if item.get("type") == "text" and "validation error" in item["text"]:
                item["text"] = item["text"].split(" [type=")[0]
                item["text"] = item["text"].split(", unable to parse")[0]
    return seen


def test_lite_answers_as_the_fastmcp_upstream(tmp_path: Path) -> None:
    fastmcp = session(UPSTREAM, tmp_path / "fastmcp.jsonl")
    lite = session(LITE, tmp_path / "lite.jsonl")
    assert len(lite) == len(fastmcp)
    for theirs, ours in zip(fastmcp, lite, strict=True):
        assert ours == theirs
    assert (tmp_path / "lite.jsonl").read_text() == (tmp_path / "fastmcp.jsonl").read_text()
