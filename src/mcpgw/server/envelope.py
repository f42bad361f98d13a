"""The JSON-RPC error replies mcpgw writes itself, before the SDK sees a message.

Owns: checking that a stdio line is a JSON-RPC 2.0 envelope (answered -32700
when it is not JSON, -32600 when it is not a request or a response; the SDK
would drop it silently) and the reply to a request over `[gateway]
max_request_bytes`, on stdio and HTTP alike.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types


def envelope_problem(line: str) -> dict[str, Any] | None:
    """The error reply for a line that is not a JSON-RPC 2.0 message; None for one that is."""
    if not line.strip():
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return _error(None, types.PARSE_ERROR, "Parse error: not JSON")
    if not isinstance(message, dict):
        return _error(
            None, types.INVALID_REQUEST, "Invalid Request: batches and non-objects are not accepted"
        )
    raw_id = message.get("id")
    valid_id = isinstance(raw_id, str | int) and not isinstance(raw_id, bool)
    reply_id = raw_id if valid_id else None
    if message.get("jsonrpc") != "2.0":
        return _error(reply_id, types.INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"')
    if "method" in message:
        if not isinstance(message["method"], str):
            return _error(reply_id, types.INVALID_REQUEST, "Invalid Request: method must be a string")
        if "id" in message and not valid_id:
            return _error(None, types.INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
        if "params" in message and not isinstance(message["params"], dict):
            return _error(reply_id, types.INVALID_REQUEST, "Invalid Request: params must be an object")
        return None
    if valid_id and ("result" in message or "error" in message):
        return None  # a client's response to a request of ours
    return _error(reply_id, types.INVALID_REQUEST, "Invalid Request: neither a request nor a response")


def too_large(limit: int) -> dict[str, Any]:
    """The reply to a request over `limit` bytes (without an id: the request was never read whole)."""
    return _error(
        None, types.INVALID_REQUEST, f"Request too large: over {limit} bytes ([gateway] max_request_bytes)"
    )


def _error(request_id: str | int | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
