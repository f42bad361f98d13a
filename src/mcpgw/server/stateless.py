"""The lean HTTP path for 2026-07-28 calls: one stateless POST served in the request's own task.

Owns: `StatelessCalls`, the ASGI app in front of the SDK's session manager that serves a
2026-07-28 `tools/call`, `resources/read`, `prompts/get` or `completion/complete` POST itself,
through the same server (its middleware, `handlers`, the pipeline), and answers it with one JSON
body; everything else goes to the SDK unchanged.

Why: the SDK's stateless entry (`handle_modern_request`, mcp 2.3) validates the envelope into a
`JSONRPCRequest` model, then, since mcpgw answers in SSE mode, runs every request as a task group
with a handler task, a disconnect-watching task and a memory stream, and dumps the answer through
a `JSONRPCResponse` model. Per call that was a large share of the gateway's own CPU over HTTP. Here
the same checks run in the same order, with the SDK's own functions (content type, Accept,
duplicated routing headers, the envelope ladder, the `Mcp-Param-*` check), the request is served
through the server's middleware chain and handlers as the SDK's `serve_one` serves it
(`server.serveone`, with what that makes per request made once), and only the transport around it
is lean: the handler runs in the request's task, a disconnect cancels it (once the call has run
`WATCH_AFTER`), the answer is written as the SDK writes it (same status mapping, headers and
JSON), and the call's bookkeeping (audit row, metrics) runs once it is (`afteranswer`, as on the
stdio lane).

Taken only when the answer is one JSON body: a request that asks for progress (`progressToken`)
or log lines (`logLevel`) goes to the SDK, as does anything it would refuse (a bad body, a
missing or mismatched header, a wrong content type). Should a notification still come while a
call runs, or the call run past the SDK's 15 s ping interval, the answer becomes an SSE stream
exactly as the SDK's would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import orjson
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    find_invalid_x_mcp_header,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import MessageMetadata, ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    LOG_LEVEL_META_KEY,
    JSONRPCError,
    JSONRPCNotification,
    RequestId,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request

from mcpgw import _compat
from mcpgw.server import afteranswer
from mcpgw.server.edge import replaying
from mcpgw.server.serveone import ServeOne
from mcpgw.upstream.deadlines import Deadlines, Later
from mcpgw.upstream.wire import parse

logger = logging.getLogger("mcpgw.http")

METHODS = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
"""The requests served here: the ones forwarded to an upstream."""
PING_INTERVAL = 15.0
"""Seconds of silence before the answer becomes an SSE stream kept alive by pings (the SDK's)."""
WATCH_AFTER = 0.05
"""Seconds a call runs before its client's connection is watched: a client gone by then cancels it
at once, one gone sooner once this has passed. Most calls are answered sooner, and watching (a task
waiting on the connection, then cancelled) was a measurable share of a short call's CPU."""

_VERSION_HEADER = b"mcp-protocol-version"
_METHOD_HEADER = b"mcp-method"
_MODERN = frozenset(v.encode() for v in MODERN_PROTOCOL_VERSIONS)
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
_ENVELOPE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_JSON_HEADERS = b"application/json"
_SSE_HEADERS = _compat.sse_response_headers()


class StatelessCalls:
    """ASGI app: 2026-07-28 forwarded calls served here, everything else by `app` (the SDK's).

    Behind `hostcheck.HostCheck` with the SDK's transport-security settings, as `http.http_app`
    installs it (the SDK's entry checks Host and Origin with those same settings again)."""

    def __init__(self, app: Any, server: Server[Any], *, manager: Any) -> None:
        self.app = app
        self.server = server
        self.manager = manager
        self._one = ServeOne(server, manager=manager)
        self.deadlines = Deadlines()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _routed_here(scope["headers"]):
            await self.app(scope, receive, send)
            return
        # `edge.BodyLimit` (in front) has read the body whole, within its limits, as one message.
        first = await receive()
        replay = replaying(first, receive)

        call = await self._admitted(scope, replay, first)
        if call is None:
            await self.app(scope, replay, send)
            return
        await _serve(self, call, replay, send)

    async def _admitted(self, scope: Any, receive: Any, first: Any) -> _Call | None:
        """The call, if the SDK would serve it with one answer and no refusal; else None."""
        if first.get("type") != "http.request" or first.get("more_body"):
            return None
        request = Request(scope, receive)
        fields, duplicated = _header_fields(scope["headers"])
        # Host and Origin: `hostcheck.HostCheck`, in front of every route with these same settings,
        # has checked them; of the SDK's transport checks only the content type is left.
        kind = fields.get("content-type")
        if kind is None or not kind.lower().startswith("application/json"):
            return None
        if not _accepts_both(fields.get("accept"), request):
            return None
        try:
            decoded = parse(first.get("body", b""))
        except (ValueError, RecursionError):
            return None
        if not isinstance(decoded, dict) or not decoded.keys() >= _ENVELOPE_KEYS:
            return None
        request_id, method, params = decoded["id"], decoded["method"], decoded["params"]
        if (
            decoded["jsonrpc"] != "2.0"
            or type(request_id) not in (int, str)  # the SDK's `RequestId`: a strict int (no bool) or a str
            or method not in METHODS
            or not isinstance(params, dict)
        ):
            return None
        meta = params.get("_meta")
        if not isinstance(meta, dict) or "progressToken" in meta or LOG_LEVEL_META_KEY in meta:
            return None  # may be answered as an SSE stream: the SDK's to serve
        if duplicated:
            return None
        verdict = classify_inbound_request(decoded, headers=fields)
        if isinstance(verdict, InboundLadderRejection) or self._param_rejection(
            request, fields, method, params
        ):
            return None
        connection = self._one.born_ready(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        return _Call(request, request_id, method, params, meta, connection)

    async def run(self, exchange: _Exchange, call: _Call) -> dict[str, Any]:
        """The call's result, served as the SDK's `serve_one` serves it (`server.serveone`)."""
        return await self._one.run(
            exchange, call.method, call.params, call.meta, call.request, call.connection
        )

    def _param_rejection(
        self, request: Request, fields: dict[str, str], method: str, params: dict[str, Any]
    ) -> bool:
        """Whether the SDK's `Mcp-Param-*` check would refuse (or could not run) this `tools/call`."""
        if method != "tools/call":
            return False
        lookup = self.server.get_tool_input_schema
        name, arguments = params.get("name"), params.get("arguments")
        if lookup is None or not isinstance(name, str):
            return lookup is None  # no lookup: the SDK would walk `tools/list`; let it
        if arguments is not None and not isinstance(arguments, Mapping):
            return False
        if not arguments and not any(h.startswith(_PARAM_PREFIX) for h in fields):
            return False
        try:
            schema = lookup(name)
        except Exception:
            return True  # the SDK logs this and goes on; it is its to say so
        return (
            schema is not None
            and _declares_headers(schema)
            and validate_mcp_param_headers(schema, arguments or {}, request.headers) is not None
        )


_DECLARING: dict[int, tuple[Mapping[str, Any], bool]] = {}
"""Whether a tool's input schema declares `Mcp-Param-*` headers, by the schema's identity (the
catalog's schemas live as long as its view, and are not changed in place); at most this many:"""
DECLARING_SCHEMAS = 1024


def _declares_headers(schema: Mapping[str, Any]) -> bool:
    """Whether the SDK's `Mcp-Param-*` check has anything to compare for `schema`: a valid one with an
    annotated property. Else it accepts any request, and walking the schema each call is waste."""
    known = _DECLARING.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    declares = find_invalid_x_mcp_header(schema) is None and bool(x_mcp_header_map(schema))
    if len(_DECLARING) >= DECLARING_SCHEMAS:
        _DECLARING.clear()
    _DECLARING[id(schema)] = (schema, declares)
    return declares


_FIELDS: dict[Any, tuple[dict[str, str], bool]] = {}
"""Header lines already read, by their bytes: a client sends the same ones call after call (but for
`Content-Length` and `Mcp-Name`); at most this many:"""
HEADER_SETS = 64


def _header_fields(raw: Any) -> tuple[dict[str, str], bool]:
    """The request's header fields decoded once (the SDK's checks would each decode them again) and
    folded as Starlette's `Headers` reads them (the first of a repeated name counts), and whether a
    routing header is repeated (the SDK refuses that)."""
    try:
        key = tuple(raw)
        known = _FIELDS.get(key)
    except TypeError:  # ASGI allows header pairs as lists: not kept
        key, known = None, None
    if known is not None:
        return known
    lines = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    read = dict(reversed(lines)), find_duplicated_routing_header(lines) is not None
    if key is not None:
        if len(_FIELDS) >= HEADER_SETS:
            _FIELDS.clear()
        _FIELDS[key] = read
    return read


_ACCEPTS: dict[str | None, bool] = {}
"""Whether an `Accept` value takes both JSON and SSE, by value (clients send the same one each call)."""
ACCEPT_VALUES = 256


def _accepts_both(accept: str | None, request: Request) -> bool:
    """Whether the request's `Accept` (`accept`, its first value) takes JSON and SSE, as the SDK reads it."""
    both = _ACCEPTS.get(accept)
    if both is None:
        has_json, has_sse = check_accept_headers(request)
        both = has_json and has_sse
        if accept is not None and len(accept) <= 256:
            if len(_ACCEPTS) >= ACCEPT_VALUES:
                _ACCEPTS.clear()
            _ACCEPTS[accept] = both
    return both


def _routed_here(headers: list[tuple[bytes, bytes]]) -> bool:
    """A 2026-07-28 request naming one of `METHODS` in its `Mcp-Method` header (read before the body)."""
    version = method = None
    for key, value in headers:
        if key == _VERSION_HEADER:
            version = value
        elif key == _METHOD_HEADER:
            method = value
    return version in _MODERN and method is not None and method.decode("latin-1") in METHODS


@dataclass
class _Call:
    request: Request
    request_id: RequestId
    method: str
    params: dict[str, Any]
    meta: dict[str, Any]
    connection: Connection


@dataclass
class _Exchange:
    """`DispatchContext` for one request, as the SDK's single-exchange one (mcp 2.3): no back-channel;
    a notification turns the answer into an SSE stream and goes on it."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: MessageMetadata
    send: Any
    progress_token: None = None
    can_send_request: bool = field(default=False, init=False)
    streaming: bool = field(default=False, init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)
    _cancel: anyio.Event | None = field(default=None, init=False)

    @property
    def cancel_requested(self) -> anyio.Event:
        """Never set (a stateless call is cancelled by its client going away); made when first read,
        as few handlers read it."""
        if self._cancel is None:
            self._cancel = anyio.Event()
        return self._cancel

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        body = dict(params) if params is not None else None
        await self.event(
            _sse_event(
                JSONRPCNotification(jsonrpc="2.0", method=method, params=body).model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
            )
        )

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return  # no progress token: the SDK's context drops progress too

    async def event(self, data: bytes, *, more: bool = True) -> None:
        """One SSE frame (a ping if empty), the stream begun first if it has not been."""
        if self._lock is None:  # made when first needed: most calls send no event
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.streaming:
                self.streaming = True
                await self.send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await self.send(
                {"type": "http.response.body", "body": data or b": ping\r\n\r\n", "more_body": more}
            )


async def _serve(calls: StatelessCalls, call: _Call, receive: Any, send: Any) -> None:
    """Serve `call` in this task; a disconnect cancels it, as closing the SDK's response stream does."""
    exchange = _Exchange(
        transport=TransportContext(
            kind="streamable-http", can_send_request=False, headers=call.request.headers
        ),
        request_id=call.request_id,
        message_metadata=ServerMessageMetadata(request_context=call.request),
        send=send,
    )
    loop = asyncio.get_running_loop()
    after = afteranswer.begin()  # the call's audit row and metrics: once its answer is written
    try:
        await _answered(calls, call, exchange, receive, send, loop)
    finally:
        # Queued behind the answer's write (`coalesce` queues it in the same turn, first): the client
        # waits for the answer, not for the row.
        loop.call_soon(after.run)


async def _answered(
    calls: StatelessCalls,
    call: _Call,
    exchange: _Exchange,
    receive: Any,
    send: Any,
    loop: asyncio.AbstractEventLoop,
) -> None:
    answer: dict[str, Any] | None = None
    # The client going away cancels this task (`_Watch.gone`), not an anyio cancel scope: entering and
    # leaving one per call was a measurable share of a short call's CPU, and the call's code needs
    # nothing of it but the one cancellation, told apart from any other by `uncancel`.
    watch = _Watch(loop, receive)
    task = watch.task
    # One timer for all calls' watches (`upstream.deadlines`), not one of each call's own.
    watch.timer = calls.deadlines.later(WATCH_AFTER, partial(watch.start, calls, exchange), loop=loop)
    try:
        result = await calls.run(exchange, call)
        answer = {"jsonrpc": "2.0", "id": call.request_id, "result": result}
    except Exception as exc:
        error = JSONRPCError(jsonrpc="2.0", id=call.request_id, error=modern_error_data(exc))
        answer = error.model_dump(mode="json", by_alias=True, exclude_none=True)
    except asyncio.CancelledError:
        if not watch.went or task.uncancel() > 0:
            raise  # not (only) the client going away: the server stopping, say
    finally:
        watch.stop()
    if answer is None:
        return  # the client went away: nothing to answer
    if exchange.streaming:
        await exchange.event(_sse_event(answer), more=False)
        return
    failed = answer.get("error")
    status = ERROR_CODE_HTTP_STATUS.get(failed["code"], 200) if isinstance(failed, dict) else 200
    body = _dumps(answer)
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON_HEADERS)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Watch:
    """A call's watch on its client's connection (from `WATCH_AFTER` on) and its keep-alive pings (from
    `PING_INTERVAL` on), each begun by a timer; the client going away cancels the call's task."""

    __slots__ = ("_loop", "_receive", "pinger", "running", "task", "timer", "watcher", "went")

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Any) -> None:
        task = asyncio.current_task(loop)
        assert task is not None  # served in the request's task
        self.task = task
        self.timer: Later | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.pinger: asyncio.Task[None] | None = None
        self.went = False
        self.running = True
        self._loop = loop
        self._receive = receive

    def start(self, calls: StatelessCalls, exchange: _Exchange) -> None:
        self.watcher = self._loop.create_task(_until_disconnect(self._receive))
        self.watcher.add_done_callback(self.gone)
        self.timer = calls.deadlines.later(
            PING_INTERVAL - WATCH_AFTER, partial(self.ping, exchange), loop=self._loop
        )

    def ping(self, exchange: _Exchange) -> None:
        self.pinger = self._loop.create_task(_keep_alive(exchange))

    def gone(self, watcher: asyncio.Task[None]) -> None:
        """The client went away (or its connection failed under us): its call is cancelled, unless it
        has finished already."""
        if not watcher.cancelled():
            watcher.exception()  # retrieved, so a failed receive is not logged as never seen
            if self.running and not self.went:
                self.went = True
                self.task.cancel()

    def stop(self) -> None:
        self.running = False
        if self.timer is not None:
            self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
        if self.pinger is not None:
            self.pinger.cancel()


async def _until_disconnect(receive: Any) -> None:
    while (await receive()).get("type") != "http.disconnect":
        pass


async def _keep_alive(exchange: _Exchange) -> None:
    """Past the ping interval without an answer: the SSE stream begun, and a ping each interval."""
    try:
        while True:
            await exchange.event(b"")
            await asyncio.sleep(PING_INTERVAL)
    except OSError:
        return  # the client is gone: the disconnect cancels the call


_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""`json.dumps(message, separators=...)` makes an encoder like this one per call."""
_NUMBER_NOT_AN_INTEGER = re.compile(rb"[0-9][.eE]")
"""Where orjson may write a float otherwise than `json` (`0.00001` for `1e-05`), or text like it."""


def _dumps(message: dict[str, Any]) -> bytes:
    """As the SDK writes an answer: compact JSON, ASCII only.

    orjson's bytes when they are exactly the standard library's (a third of its CPU on a short
    answer, far less on a long one): ASCII (else `json` escapes what orjson writes as UTF-8), no
    DEL (`json` escapes it), no `null` (orjson writes NaN and infinities so), and nothing that may be
    a float (the two write some differently). Else, and for what orjson refuses, `json` itself."""
    try:
        fast = orjson.dumps(message)
    except TypeError:
        return _ENCODER.encode(message).encode()
    exact = fast.isascii() and b"\x7f" not in fast and b"null" not in fast
    if exact and _NUMBER_NOT_AN_INTEGER.search(fast) is None:
        return fast
    return _ENCODER.encode(message).encode()


def _sse_event(message: dict[str, Any]) -> bytes:
    return b"event: message\r\ndata: " + _dumps(message) + b"\r\n\r\n"
