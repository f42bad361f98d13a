"""A minimal MCP server over stdio, standard library only, that answers any result.

One tool, `answer(result)`: its `tools/call` result is `result` exactly as the caller wrote it, valid
or not, so a test can put any shape on a real upstream's wire (`tests/test_shapes.py`). It speaks
real JSON-RPC lines, in the handshake era; with `--modern`, in 2026-07-28 (it answers
`server/discover`). Anything but those, `tools/list`, `tools/call` and `ping` is -32601.
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


MODERN = "--modern" in sys.argv


def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    modern = {"resultType": "complete", "ttlMs": 0, "cacheScope": "private"} if MODERN else {}
    result: Any
    if method == "server/discover" and MODERN:
        result = {
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "verbatim", "version": "1"}},
            **modern,
        }
    elif method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "verbatim", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": [TOOL], **modern}
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
