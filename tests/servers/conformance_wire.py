"""How the conformance fixture's 2026-07-28 `tools/call` responses look on the wire where the reference's do.

The suite's reference server writes some responses itself instead of through
its SDK, and they differ from what the mcp SDK's server writes; a gateway must
cope with them as a direct client does:
- the ordinary `test_*` tools' results lack `resultType` (a client takes that
  as `complete`);
- the diagnostic tools answer `application/json` with one JSON-RPC message per
  line (NDJSON): notifications first, then the response;
- a result sent while the client is away from a stream it was told to resume
  in 5 s is lost (`ReferenceEventStore`).
The SDK's server validates every result against the 2026 schema (which requires
`resultType`) and writes SSE or one JSON document, so a handler cannot do
either: this ASGI wrapper rewrites the response on its way out.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
from conformance_stateless import UNSTAMPED, omits_result_type
from fastmcp.server.event_store import EventStore
from mcp_types import JSONRPCError, JSONRPCResponse


def as_the_reference_writes(app: Any) -> Any:
    """`app`, its 2026-07-28 `tools/call` responses rewritten as the reference writes them."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        body = await _whole_body(receive)
        name = _tool_called(scope, body)
        if name is None or not omits_result_type(name):
            return await app(scope, _replaying(body, receive), send)
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def collect(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, _replaying(body, receive), collect)
        messages = [_untagged(m) for m in _messages(b"".join(chunks))]
        if name in UNSTAMPED:
            out = "\n".join(json.dumps(m) for m in messages).encode()
            content_type = b"application/json"
        else:
            out = b"".join(f"event: message\ndata: {json.dumps(m)}\n\n".encode() for m in messages)
            content_type = dict(start.get("headers", [])).get(b"content-type", b"text/event-stream")
            if content_type.startswith(b"application/json"):
                out = json.dumps(messages[-1]).encode()
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", content_type), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": start.get("status", 200), "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return asgi


async def _whole_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Any) -> Any:
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


def _tool_called(scope: dict[str, Any], body: bytes) -> str | None:
    """The tool a 2026-07-28 `tools/call` request names; None for anything else."""
    headers = {k.lower(): v for k, v in scope["headers"]}
    if headers.get(b"mcp-protocol-version") != b"2026-07-28":
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("method") != "tools/call":
        return None
    name = (request.get("params") or {}).get("name")
    return name if isinstance(name, str) else None


def _messages(body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE or JSON response body, in order."""
    text = body.decode()
    if text.lstrip().startswith("{"):
        return [json.loads(text)]
    found = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            found.append(json.loads(line[5:].strip()))
    return found


def _untagged(message: dict[str, Any]) -> dict[str, Any]:
    """A complete result loses its `resultType`; an `input_required` one keeps it, and so does the rest."""
    result = message.get("result")
    if isinstance(result, dict) and result.get("resultType") == "complete":
        message = {**message, "result": {k: v for k, v in result.items() if k != "resultType"}}
    return message


class ReferenceEventStore(EventStore):
    """An event store that, like the reference's server, loses a call's result sent while its client is away.

    The reference hints `retry: 5000` on its SSE streams, yet a client that waits that long after
    `test_reconnection` closes its stream finds the result gone (its TypeScript transport replays
    only what was stored, and does not keep a response sent to no stream); the suite's own client
    reconnects at once and passes. Here responses are not kept for replay, and `resumed` tells the
    tool when a client came back, so it answers on the resumed stream: a client that reconnects at
    once gets its result, one that honours the 5 s hint does not.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resumed = anyio.Event()

    async def store_event(self, stream_id: str, message: Any) -> str:
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            return uuid.uuid4().hex  # an id for the event, but nothing to replay
        return await super().store_event(stream_id, message)

    async def replay_events_after(self, last_event_id: str, send_callback: Any) -> Any:
        stream = await super().replay_events_after(last_event_id, send_callback)
        self.resumed.set()
        return stream
