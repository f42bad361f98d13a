"""A minimal MCP server over stdio (handshake era), standard library only, that answers any result.

One tool, `answer(result)`: its `tools/call` result is `result` exactly as the caller wrote it, valid
or not, so a test can put any shape on a real upstream's wire (`tests/test_shapes.py`). It speaks
real JSON-RPC lines; anything but the handshake, `tools/list`, `tools/call` and `ping` is -32601.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TOOL = {
    "name": "answer",
    "description": "Answer `result` as this call's result, verbatim.",
    "inputSchema": {"type": "object", "properties": {"result": {}}},
}


def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "initialize":
        result: Any = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "verbatim", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        result = (params.get("arguments") or {}).get("result")
    elif method == "ping":
        result = {}
    else:
        return {"error": {"code": -32601, "message": "Method not found"}}
    return {"result": result}


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("id") is None:
            continue  # notifications need no answer
        reply = answer(message.get("method", ""), message.get("params") or {})
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], **reply}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
