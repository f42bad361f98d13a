"""The lean lane: the forwarded requests of a stdio client served straight off the pipe.

Owns: `LeanLane`, which takes `tools/call`, `resources/read`, `prompts/get` and
`completion/complete` lines from stdin (`pipestreams.PipeMessages` offers it every line first), runs
each in a task of its own through the server's middleware chain and handler exactly as the mcp SDK's
runner would, and writes the answer (or error) as one line.

What the SDK would do around the handler, and this lane does not: validate the line into a message
model, pass it through two memory streams and a relay task, build a dispatch context and a kernel
per request, validate `_meta` into a model, and dump the answer through a response model. What it
keeps, the same way: the middleware chain (rate limits, audit, tracing, metrics, the listing cache,
`fastlane`), the params check and its errors, the per-version result shaping, progress for a
`progressToken`, `notifications/cancelled` (a cancelled request is never answered), server-to-client
requests during a call (sent through the SDK's dispatcher, whose waiter the client's answer reaches),
the log gate (the connection's `logging/setLevel`, a 2026-07-28 request's own log level) and the
answer `Connection closed` to calls in flight at shutdown.

The lane takes a request only when it knows what the SDK would make of it; everything else goes to
the SDK unchanged: any request before the connection's era is known (the SDK decides it on the first
request, and this lane learns it from the first context the middleware chain sees), a handshake-era
request before `initialize` was accepted or carrying the 2026-07-28 envelope, a 2026-07-28 request
whose envelope the SDK's ladder refuses, and every other method, notification and response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from mcp.server.connection import Connection, NotifyOnlyOutbound
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import aclose_shielded, modern_error_data
from mcp.server.session import ServerSession
from mcp.shared.dispatcher import CallOptions, Outbound, coerce_request_id
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request
from mcp.shared.jsonrpc_dispatcher import (
    cancelled_request_id_from_params,
    handler_exception_to_error_data,
    progress_token_from_params,
)
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    CONNECTION_CLOSED,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCResponse,
    ProgressToken,
    RequestId,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcpgw import _compat
from mcpgw.server import afteranswer
from mcpgw.server.fastlane import Chains, LeanCalls, dumped
from mcpgw.server.pipestreams import PipeMessages, PipeSends
from mcpgw.server.serveone import born_like
from mcpgw.upstream.wire import dumps

logger = logging.getLogger("mcpgw.server")

Ctx = ServerRequestContext[Any, Any]
METHODS = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})


class _Request:
    """The `DispatchContext` of one lean request: its notifications and progress go straight to the pipe."""

    __slots__ = (
        "_back",
        "_cancel_requested",
        "_closed",
        "_lane",
        "_token",
        "cancelled",
        "releasable",
        "request_id",
        "task",
        "unwinding",
    )

    message_metadata = None

    def __init__(
        self, lane: LeanLane, request_id: RequestId, token: ProgressToken | None, back: Outbound | None
    ) -> None:
        self._lane = lane
        self.request_id = request_id
        self._token = token
        self._back = back  # the SDK's dispatcher for a handshake-era connection; none at 2026-07-28
        self._closed = False
        self._cancel_requested: anyio.Event | None = None
        self.cancelled = False
        self.task: asyncio.Task[None] | None = None
        self.unwinding = False  # its connection's exit stack is being unwound (shielded, as the SDK's)
        self.releasable = False  # its 2026-07-28 connection may serve the next request (`_release`)

    @property
    def can_send_request(self) -> bool:
        return self._back is not None and not self._closed

    @property
    def transport(self) -> TransportContext:
        return TransportContext(kind="jsonrpc", can_send_request=self._back is not None)

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel_requested is None:
            self._cancel_requested = anyio.Event()
            if self.cancelled:
                self._cancel_requested.set()
        return self._cancel_requested

    def cancel(self) -> None:
        """The client cancelled this request: stop it, and never answer it.

        Its task is cancelled natively, not through an anyio cancel scope around it: a scope cost a
        tenth of the lane's CPU before the handler. The same where it matters: the request stops at
        its next await, once (a second cancel is a no-op, so the upstream's courtesy cancel, written
        on the way out, is not cut short), and its answer is never written (`_serve`)."""
        if self.cancelled:
            return
        self.cancelled = True
        if self._cancel_requested is not None:
            self._cancel_requested.set()
        if self.task is not None and not self.unwinding:
            self.task.cancel()

    def close(self) -> None:
        self._closed = True

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        if self._closed:
            logger.debug("dropped %s: request %r already answered", method, self.request_id)
            return
        await self._lane.notify(method, params)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        if self._back is None or self._closed:
            raise NoBackChannelError(method)
        return await self._back.send_raw_request(method, params, opts)

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self._token is None:
            return
        params: dict[str, Any] = {"progressToken": self._token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)


class _PipeOutbound:
    """A 2026-07-28 connection's standalone channel: notifications ride the pipe, requests are refused."""

    def __init__(self, lane: LeanLane) -> None:
        self._lane = lane

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        await self._lane.notify(method, params)


async def serve(
    server: Server[Any],
    lines: AsyncIterator[str],
    *,
    write: Callable[[bytes], None],
    drain: Callable[[], Awaitable[None]],
    options: InitializationOptions,
) -> None:
    """Serve one client whose JSON-RPC lines come from `lines`, answering through `write` (whole
    lines; `drain` waits while the client is behind), with the lean lane in front of the SDK."""
    lane = LeanLane(server, write=write, drain=drain)
    server.middleware.insert(0, lane.observe)
    async with lane.serving():
        await server.run(PipeMessages(lines, lane.take), PipeSends(write, drain), options)


class LeanLane:
    """Serves the forwarded requests of one stdio connection off the pipe (see the module docstring).

    `write` puts whole lines on stdout; `drain` waits while the client is behind reading them.
    `observe` must be the server's first middleware: it learns the connection's era from the SDK.
    """

    def __init__(
        self, server: Server[Any], *, write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]]
    ) -> None:
        self._server = server
        self._shaping = LeanCalls(server)
        self._write = write
        self._drain = drain
        self._open = False
        # Plain asyncio tasks, not an anyio task group: `start_soon` was a tenth of the lane's own CPU
        # per call (cProfile). The request's anyio cancel scope still runs inside each (`_serve`).
        self._tasks: set[asyncio.Task[None]] = set()
        self._modern: bool | None = None  # the connection's era, once the SDK chose it
        self._connection: Connection | None = None  # a handshake-era connection (one for all requests)
        self._lifespan: Any = None
        self._outbound = NotifyOnlyOutbound(_PipeOutbound(self))
        self._envelope: tuple[Any, Connection] | None = None
        self._spare: Connection | None = None  # a 2026-07-28 request's connection, reusable as born
        # The era `observe` learns is known before the lane takes any request.
        self._chained = Chains(server, self._shaping, skip=(self.observe,))
        self._in_flight: dict[RequestId, _Request] = {}

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Take requests while open; on leaving, calls still in flight are answered `Connection closed`."""
        self._open = True
        try:
            yield
        finally:
            self._open = False
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait(tasks)
            for request in list(self._in_flight.values()):  # cancelled before its task first ran
                if not request.cancelled:
                    self._write(_error_line(request.request_id, _CLOSED))
            self._in_flight.clear()

    async def observe(self, ctx: Ctx, call_next: Callable[[Ctx], Awaitable[Any]]) -> Any:
        """Server middleware: the first context the SDK builds says the connection's era."""
        if self._modern is None:
            self._lifespan = ctx.lifespan_context
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                self._modern = True
            else:
                self._connection = _compat.session_connection(ctx.session)
                self._modern = False if self._connection is not None else None
        return await call_next(ctx)

    def take(self, message: Any) -> bool:
        """Serve `message` here if it is a request this lane serves as the SDK would; False: the SDK's."""
        if type(message) is not dict:
            return False
        method = message.get("method")
        if method not in METHODS:
            if method == "notifications/cancelled":
                self._cancelled(message.get("params"))
            return False
        if not self._open or "id" not in message or self._modern is None:
            return False
        params = message.get("params")
        back: Outbound | None = None
        connection: Connection | None
        if self._modern:
            envelope = _envelope_of(params)
            if envelope is None:  # not the plain case: the SDK's ladder says
                route = classify_inbound_request(message)
                if isinstance(route, InboundLadderRejection):
                    return False  # the SDK's refusal, with its code, message and data
                envelope = (route.protocol_version, route.client_info, route.client_capabilities)
            connection = self._born_ready(envelope)
        else:
            connection = self._connection
            if connection is None or not connection.initialize_accepted or _enveloped(params):
                return False
            back = connection.outbound
        request = _Request(self, message["id"], progress_token_from_params(params), back)
        key = coerce_request_id(request.request_id)
        # In flight from now: a `notifications/cancelled` read before its task first runs still finds it.
        self._in_flight[key] = request
        task = request.task = asyncio.get_running_loop().create_task(
            self._serve(request, key, method, params, connection)
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            # Cancelled by its client before it first ran: no longer in flight. (One cancelled at
            # shutdown before it first ran stays, for `serving` to answer `Connection closed`.)
            for key, request in list(self._in_flight.items()):
                if request.task is task and request.cancelled:
                    del self._in_flight[key]
        elif (exc := task.exception()) is not None:
            logger.error("a lean request failed", exc_info=exc)  # `_serve` lets none through

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        line: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            line["params"] = dict(params)
        await self._send(dumps(line) + b"\n")

    def _cancelled(self, params: Any) -> None:
        request_id = cancelled_request_id_from_params(params if isinstance(params, dict) else None)
        request = self._in_flight.get(coerce_request_id(request_id)) if request_id is not None else None
        if request is not None:
            request.cancel()

    def _born_ready(self, key: tuple[str, Any, Any]) -> Connection:
        """A 2026-07-28 request's connection, as the SDK builds it (`Connection.from_envelope`) from its
        envelope `key` (version, client info, capabilities); the envelope's typed client info and
        capabilities are kept while the client sends the same ones."""
        if self._envelope is None or self._envelope[0] != key:
            template = Connection.from_envelope(*key, outbound=self._outbound)
            self._envelope, self._spare = (key, template), None
        spare, self._spare = self._spare, None
        if spare is not None:
            return spare
        return born_like(self._envelope[1], key[0], outbound=self._outbound)

    def _release(self, connection: Connection) -> None:
        """A 2026-07-28 request's connection, done with: the next request's if it is still as it was
        born (no state, nothing to unwind), as the SDK's own would be: one fewer object per request."""
        template = self._envelope[1] if self._envelope is not None else None
        if (
            template is not None
            and not connection.state
            and _compat.exit_stack_empty(connection.exit_stack)
            and connection.protocol_version == template.protocol_version
            and connection.client_params is template.client_params
            and connection.client_capabilities is template.client_capabilities
            and connection.session_id is None
            and connection.outbound is self._outbound
            and vars(connection).keys() == vars(template).keys()
        ):
            self._spare = connection

    async def _serve(
        self,
        request: _Request,
        key: RequestId,
        method: str,
        params: dict[str, Any] | None,
        connection: Connection,
    ) -> None:
        answer: bytes | None = None
        after = afteranswer.begin()  # the request's audit row and metrics: once its answer is out
        try:
            try:
                try:
                    result = await self._run(request, method, params, connection)
                    answer = _result_line(request.request_id, result)
                except Exception as exc:
                    answer = _error_line(request.request_id, self._error(method, exc))
                finally:
                    request.close()
                    if self._in_flight.get(key) is request:
                        del self._in_flight[key]
            except asyncio.CancelledError:
                if not request.cancelled:  # shutting down: the client is not left waiting
                    self._write(_error_line(request.request_id, _CLOSED))
                    raise
                return  # the client cancelled it: never answered
            if answer is not None and not request.cancelled:
                self._write(answer)  # here, not in `_send`: a coroutine fewer before the answer
                after.run()
                await self._drained()
        finally:
            after.run()
            if request.releasable:
                self._release(connection)  # after the answer: bookkeeping the client does not wait for

    async def _send(self, line: bytes) -> None:
        self._write(line)
        await self._drained()

    async def _drained(self) -> None:
        try:
            await self._drain()
        except (ConnectionError, RuntimeError):
            logger.debug("the client stopped reading stdout")

    def _error(self, method: str, exc: Exception) -> ErrorData:
        """The error the SDK's dispatcher (and, at 2026-07-28, its modern loop) would answer with."""
        error = handler_exception_to_error_data(exc)
        if error is not None:
            return error
        if self._modern:
            return modern_error_data(exc)
        logger.exception("handler for %r raised", method)
        return ErrorData(code=0, message=str(exc))

    async def _run(
        self, request: _Request, method: str, params: dict[str, Any] | None, connection: Connection
    ) -> dict[str, Any]:
        meta = params.get("_meta") if params else None
        if not isinstance(meta, dict):
            meta = None
        version = connection.protocol_version
        ctx: Ctx = ServerRequestContext(
            session=ServerSession(request, connection, request_meta=meta),  # type: ignore[arg-type]
            lifespan_context=self._lifespan,
            protocol_version=version,
            method=method,
            params=params,
            request_id=request.request_id,
            meta=meta,  # type: ignore[arg-type]
        )
        try:
            return dumped(await self._chained(method)(ctx))
        finally:
            if self._modern:
                if not _compat.exit_stack_empty(connection.exit_stack):
                    request.unwinding = True  # a cancel now is not let in (the unwind is shielded)
                    await aclose_shielded(connection)  # as the SDK's `serve_one` does per request
                else:
                    request.releasable = True


_CLOSED = ErrorData(code=CONNECTION_CLOSED, message="Connection closed")


def _envelope_of(params: Any) -> tuple[str, Any, Any] | None:
    """The envelope of a 2026-07-28 request the SDK's ladder (`classify_inbound_request`, no headers)
    passes as it is, as (version, client info, capabilities); None: the ladder decides. Why not the
    ladder itself every time: its ABC checks and frozen route object were a tenth of `take`'s CPU."""
    meta = params.get("_meta") if type(params) is dict else None
    if type(meta) is not dict or CLIENT_CAPABILITIES_META_KEY not in meta:
        return None
    version = meta.get(PROTOCOL_VERSION_META_KEY)
    if type(version) is not str or version not in MODERN_PROTOCOL_VERSIONS:
        return None
    return version, meta.get(CLIENT_INFO_META_KEY), meta[CLIENT_CAPABILITIES_META_KEY]


def _enveloped(params: Any) -> bool:
    """Whether a request carries the 2026-07-28 envelope (refused on a handshake-era connection)."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta


def _result_line(request_id: RequestId, result: dict[str, Any]) -> bytes:
    try:
        return dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + b"\n"
    except (TypeError, ValueError):  # what only pydantic can write: the SDK's own dump
        message = JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result)
        return message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


def _error_line(request_id: RequestId, error: ErrorData) -> bytes:
    """An error as the SDK writes it (`data` only when set): errors are rare, so the SDK's own model."""
    message = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
    return message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
