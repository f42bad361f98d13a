"""The JSON-RPC error replies mcpgw writes itself, before the SDK sees a message.

Owns: checking that a stdio line is a JSON-RPC 2.0 envelope (answered -32700
when it is not JSON, -32600 when it is not a request or a response; the SDK
would drop it silently) and the reply to a request over `[gateway]
max_request_bytes`, on stdio and HTTP alike.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types

from mcpgw.upstream.wire import parse

MAX_DEPTH = 200
"""The deepest nesting the SDK's parser (pydantic's JSON, ~200 levels) accepts: a deeper message would
be dropped unanswered there, and one deep enough crashed Python's own parser."""
_TOO_DEEP = object()
UNPARSED = object()
"""What `checked` gives for a line it could not parse."""


def _too_deep(line: str, message: Any) -> bool:
    """Whether `message` nests more than `MAX_DEPTH` containers; free for the usual shallow line."""
    if line.count("[") + line.count("{") <= MAX_DEPTH:
        return False  # fewer openings than the limit: it cannot nest deeper
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values() if isinstance(item, dict | list))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return False


def checked(line: str) -> tuple[Any, dict[str, Any] | None]:
    """`line` parsed (`UNPARSED` when blank or not JSON), and the error reply when it is not a JSON-RPC
    2.0 message (None when it is): whoever reads the line next need not parse it again."""
    if not line.strip():
        return UNPARSED, None
    try:
        message = parse(line)
    except ValueError:
        return UNPARSED, _error(None, types.PARSE_ERROR, "Parse error: not JSON")
    except RecursionError:
        message = _TOO_DEEP
    return message, _problem(line, message)


def _problem(line: str, message: Any) -> dict[str, Any] | None:
    if message is _TOO_DEEP or _too_deep(line, message):
        return _error(None, types.PARSE_ERROR, f"Parse error: nested more than {MAX_DEPTH} levels deep")
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
