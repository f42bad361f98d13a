"""mcpgw as an MCP server: the wire side, over stdio and streamable HTTP, in both protocol eras.

Owns: the MCP request handlers (served from the gateway's in-memory catalog),
translating `GatewayError`s into MCP errors (nothing unexpected leaks raw),
relaying progress, announcing catalog changes to handshake-era connections
(`notifications/*/list_changed`) and 2026-07-28 listeners
(`subscriptions/listen`), and running the transports with signal handling.

Why the mcp SDK's lowlevel `Server` and not fastmcp's `FastMCP`: a tool call
through fastmcp's full server pipeline measured about 2 ms extra (2.25x a direct
stdio call) on these machines; the lowlevel server serves both eras
(`initialize` and `server/discover`) with per-version result shaping, and lets
handlers return the upstream's raw result dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio
import mcp_types as types
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, RequestHandler, Server
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict

from mcpgw import audit, version
from mcpgw.core.gateway import Gateway
from mcpgw.errors import GatewayError
from mcpgw.sampling import ClientChannel
from mcpgw.server.hostcheck import transport_security
from mcpgw.server.listening import ListenBridge
from mcpgw.upstream.logrelay import LogLevels, LogSink

logger = logging.getLogger("mcpgw.server")

T = TypeVar("T")
Ctx = ServerRequestContext[Any, Any]


async def _guarded(work: Callable[[], Awaitable[T]]) -> T:
    """The one place gateway errors become MCP errors; unexpected ones are logged, never leaked."""
    try:
        return await work()
    except GatewayError as exc:
        raise MCPError(code=exc.jsonrpc_code, message=str(exc)) from exc
    except MCPError:
        raise
    except Exception as exc:
        logger.exception("internal error while serving a request")
        raise MCPError(
            code=types.INTERNAL_ERROR, message="mcpgw internal error (see the gateway log)"
        ) from exc


_NAME_KEYS = {"call": "name", "prompt": "name", "read": "uri", "subscribe": "uri"}


async def _recorded(
    gateway: Gateway, ctx: Ctx, kind: str, persona: str | None, work: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Serve one request as one audit step: what, for whom, from which client, how it ended."""
    if gateway.audit is None:
        return await _guarded(work)
    raw = ctx.params or {}
    step = _step(gateway, ctx, audit.Kind(kind), persona)
    if kind in _NAME_KEYS:
        step.name = str(raw.get(_NAME_KEYS[kind]))
    elif kind == "list":
        step.name = ctx.method
    if kind in ("call", "prompt"):
        step.arguments = raw.get("arguments")
    with audit.recording(step, into=gateway.audit):
        result = await _guarded(work)
        if result.get("isError"):
            step.outcome = audit.Outcome.ERROR
            step.error = _first_text(result)
        if kind == "call":
            step.result = result.get("structuredContent") or _first_text(result)
        return result


def _step(gateway: Gateway, ctx: Ctx, kind: audit.Kind, persona: str | None) -> audit.Step:
    """A step for the request `ctx` serves: who asked, from which client, in which era."""
    return audit.Step(
        kind=kind,
        method=ctx.method,
        persona=_persona_label(gateway, persona),
        client=_client_name(ctx),
        protocol=ctx.protocol_version,
        principal=_principal(ctx),
    )


def _persona_label(gateway: Gateway, persona: str | None) -> str | None:
    try:
        return gateway.resolve_persona(persona)
    except GatewayError:
        return persona


def _client_name(ctx: Ctx) -> str | None:
    meta = (ctx.params or {}).get("_meta")
    if isinstance(meta, dict):
        info = meta.get("io.modelcontextprotocol/clientInfo")
        if isinstance(info, dict) and info.get("name"):
            return str(info["name"])
    params = ctx.session.client_params
    return params.client_info.name if params is not None else None


def _principal(ctx: Ctx) -> str | None:
    """The token's subject and client over HTTP with `[auth]`; None otherwise."""
    scope = getattr(ctx.request, "scope", None)
    if not isinstance(scope, dict) or "user" not in scope:
        return None
    from mcpgw.server import auth

    return auth.principal(scope)


def _first_text(result: dict[str, Any]) -> str | None:
    for item in result.get("content") or []:
        if isinstance(item, dict) and item.get("type") == "text":
            return str(item.get("text"))[:2000]
    return None


def _raw(ctx: Ctx) -> dict[str, Any]:
    return dict(ctx.params or {})


def _shaped(ctx: Ctx, result: dict[str, Any]) -> dict[str, Any]:
    """2026-07-28 results must say their `resultType`; the SDK adds it to typed results, not dicts."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and "resultType" not in result:
        result["resultType"] = "complete"
    return result


def _progress_relay(ctx: Ctx) -> Callable[[float, float | None, str | None], Awaitable[None]] | None:
    meta = (ctx.params or {}).get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    if token is None:
        return None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.send_progress_notification(
            progress_token=token,
            progress=progress,
            total=total,
            message=message,
            related_request_id=str(ctx.request_id) if ctx.request_id is not None else None,
        )

    return relay


def _log_sink(ctx: Ctx, levels: LogLevels) -> LogSink:
    """Where an upstream's log lines for this call go: this call's own stream, at the client's level."""
    connection = getattr(ctx.session, "_connection", None)

    async def sink(level: str, data: Any, name: str | None) -> None:
        if connection is not None and not levels.wants(connection, level):
            return
        # The SDK itself drops what a 2026-07-28 request did not opt in to (its `_meta` log level).
        await ctx.session.send_log_message(
            cast(types.LoggingLevel, level), data, logger=name, related_request_id=ctx.request_id
        )

    return sink


class _AnyResult(BaseModel):
    """A client's result kept whole (the upstream that asked validates it)."""

    model_config = ConfigDict(extra="allow")


def _client_channel(ctx: Ctx) -> ClientChannel:
    """What the downstream client behind this request can answer: sampling, elicitation, and how."""
    caps = ctx.session.client_capabilities
    modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS

    async def send(method: str, params: dict[str, Any]) -> dict[str, Any]:
        # On the request's own channel: over HTTP it rides the POST's response stream.
        request = types.server_request_adapter.validate_python({"method": method, "params": params})
        metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
        answer = await ctx.session.send_request(request, _AnyResult, metadata=metadata)
        return answer.model_dump(by_alias=True, exclude_none=True)

    return ClientChannel(
        can_sample=caps is not None and caps.sampling is not None,
        can_elicit=caps is not None and caps.elicitation is not None,
        modern=modern,
        send=None if modern else send,
    )


class Announcer:
    """Tells connected clients that lists changed, in each client's era."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()

    async def track(self, ctx: Ctx, call_next: Callable[[Ctx], Awaitable[Any]]) -> Any:
        """Server middleware: remember handshake-era connections, which get standalone notifications."""
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            connection = getattr(ctx.session, "_connection", None)
            if connection is not None:
                self._connections.add(connection)
        return await call_next(ctx)

    async def __call__(self, changed: set[str]) -> None:
        events: dict[str, ServerEvent] = {
            "tools": ToolsListChanged(),
            "resources": ResourcesListChanged(),
            "prompts": PromptsListChanged(),
        }
        for kind in sorted(changed):
            await self.bus.publish(events[kind])
        for connection in list(self._connections):
            if "tools" in changed:
                await connection.send_tool_list_changed()
            if "resources" in changed:
                await connection.send_resource_list_changed()
            if "prompts" in changed:
                await connection.send_prompt_list_changed()


class ListingCache:
    """Server middleware: each list result is shaped for the wire once per catalog and protocol version.

    The SDK re-validates and re-serialises every result against the negotiated
    version; for a 500-tool catalog that was ~18 ms of CPU per `tools/list`.
    The catalog is immutable, so its shaped listing can be reused until the
    gateway builds a new one. A middleware that returns without `call_next`
    owns its result, envelope included, which is exactly what is cached.
    """

    METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})

    def __init__(self, gateway: Gateway, persona_of: Callable[[Ctx], str | None]) -> None:
        self._gateway = gateway
        self._persona_of = persona_of
        self._catalog: object = None
        self._shaped: dict[tuple[str, str, str | None], dict[str, Any]] = {}

    async def __call__(self, ctx: Ctx, call_next: Callable[[Ctx], Awaitable[Any]]) -> Any:
        if ctx.method not in self.METHODS or (ctx.params or {}).get("cursor"):
            return await call_next(ctx)
        await self._gateway.wait_started()
        catalog = self._gateway.catalog
        if catalog is not self._catalog:
            self._catalog, self._shaped = catalog, {}
        key = (ctx.method, ctx.protocol_version, self._persona_of(ctx))
        cached = self._shaped.get(key)
        if cached is None:
            cached = await call_next(ctx)
            if self._gateway.catalog is catalog and isinstance(cached, dict):
                self._shaped[key] = cached
        return cached


PERSONA_PATH_PARAM = "persona"


def build_server(gateway: Gateway, *, persona: str | None = None) -> tuple[Server[Any], Announcer]:
    """The MCP server that serves `gateway`'s catalog.

    On stdio the persona is fixed by `persona`; on HTTP each request's persona
    comes from its URL path (`/personas/<name>/mcp`), never from session state,
    so one session cannot carry a persona across endpoints.
    """

    def persona_of(ctx: Ctx) -> str | None:
        request = ctx.request
        path_params = getattr(request, "path_params", None)
        if path_params and PERSONA_PATH_PARAM in path_params:
            return str(path_params[PERSONA_PATH_PARAM])
        return persona

    def listing(key: str, attribute: str) -> RequestHandler[Any, Any]:
        async def handler(ctx: Ctx, params: Any) -> dict[str, Any]:
            async def work() -> dict[str, Any]:
                await gateway.wait_started()
                return _shaped(ctx, {key: getattr(gateway.view(persona_of(ctx)), attribute)})

            return await _recorded(gateway, ctx, "list", persona_of(ctx), work)

        return handler

    def forwarding(
        kind: str, forward: Callable[[Ctx, str | None], Awaitable[dict[str, Any]]]
    ) -> RequestHandler[Any, Any]:
        async def handler(ctx: Ctx, params: Any) -> dict[str, Any]:
            async def work() -> dict[str, Any]:
                result = await forward(ctx, persona_of(ctx))
                _check_era(ctx, result)
                return _shaped(ctx, result)

            return await _recorded(gateway, ctx, kind, persona_of(ctx), work)

        return handler

    announcer = Announcer()
    log_levels = LogLevels()

    async def set_level(ctx: Ctx, params: types.SetLevelRequestParams) -> dict[str, Any]:
        """`logging/setLevel` (handshake era): the least severe upstream log line this connection gets."""
        connection = getattr(ctx.session, "_connection", None)
        if connection is not None:
            log_levels.set(connection, params.level)
        return {}

    hints = {cast(CacheableMethod, m): CacheHint(ttl_ms=0, scope="private") for m in CACHEABLE_METHODS}
    server: Server[Any] = Server(
        gateway.registry.gateway.name,
        version=version(),
        instructions=_instructions(gateway),
        cache_hints=hints,
        on_subscriptions_listen=ListenBridge(
            gateway, plain=announcer.listen, shared=announcer.bus, persona_of=persona_of
        ),
        # Mcp-Param header checks on 2026 HTTP would otherwise run the whole tools/list per call.
        get_tool_input_schema=lambda name: gateway.input_schema(name),
    )
    # Registered through `add_request_handler` because these handlers return the upstream's raw
    # dicts (which the runner shapes per protocol version), not the typed results `on_*` declare.
    handlers: list[tuple[str, type[BaseModel], RequestHandler[Any, Any]]] = [
        ("tools/list", types.PaginatedRequestParams, listing("tools", "listed_tools")),
        ("resources/list", types.PaginatedRequestParams, listing("resources", "resources")),
        (
            "resources/templates/list",
            types.PaginatedRequestParams,
            listing("resourceTemplates", "resource_templates"),
        ),
        ("prompts/list", types.PaginatedRequestParams, listing("prompts", "prompts")),
        (
            "tools/call",
            types.CallToolRequestParams,
            forwarding(
                "call",
                lambda ctx, p: gateway.call_tool(
                    _raw(ctx),
                    persona=p,
                    on_progress=_progress_relay(ctx),
                    on_log=_log_sink(ctx, log_levels),
                    client=_client_channel(ctx),
                ),
            ),
        ),
        (
            "resources/read",
            types.ReadResourceRequestParams,
            forwarding(
                "read",
                lambda ctx, p: gateway.read_resource(_raw(ctx), persona=p, client=_client_channel(ctx)),
            ),
        ),
        (
            "prompts/get",
            types.GetPromptRequestParams,
            forwarding(
                "prompt", lambda ctx, p: gateway.get_prompt(_raw(ctx), persona=p, client=_client_channel(ctx))
            ),
        ),
        (
            "completion/complete",
            types.CompleteRequestParams,
            forwarding("complete", lambda ctx, p: gateway.complete(_raw(ctx), persona=p)),
        ),
    ]
    for method, params_type, handler in handlers:
        server.add_request_handler(method, params_type, handler)
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    for method, on in (("resources/subscribe", True), ("resources/unsubscribe", False)):
        server.add_request_handler(
            method, types.SubscribeRequestParams, _subscription(gateway, persona_of, on)
        )
    # Replaces the default OpenTelemetry middleware: the call path stays lean (see module docstring).
    server.middleware = [announcer.track, ListingCache(gateway, persona_of)]
    gateway.add_listener(announcer)
    return server, announcer


_FORGETS = "mcpgw.forgets-subscriptions"
"""Connection state key: its upstream subscriptions are dropped when it closes."""


def _subscription(
    gateway: Gateway, persona_of: Callable[[Ctx], str | None], on: bool
) -> RequestHandler[Any, Any]:
    """`resources/subscribe` and `unsubscribe` (handshake era): updates go to this connection."""

    async def handler(ctx: Ctx, params: Any) -> dict[str, Any]:
        connection = getattr(ctx.session, "_connection", None)

        async def work() -> dict[str, Any]:
            if connection is None:
                raise MCPError(code=types.INVALID_REQUEST, message="resource subscriptions need a connection")
            result = await gateway.subscribe(_raw(ctx), persona=persona_of(ctx), connection=connection, on=on)
            if on and not connection.state.get(_FORGETS):
                # A client that goes without unsubscribing (an HTTP session ended or timed out)
                # must not leave its upstream subscriptions behind: the SDK unwinds each
                # connection's exit stack, shielded and bounded, when it closes.
                connection.state[_FORGETS] = True
                connection.exit_stack.push_async_callback(gateway.watch.forget, connection)
            return result

        return await _recorded(gateway, ctx, "subscribe", persona_of(ctx), work)

    return handler


def _check_era(ctx: Ctx, result: dict[str, Any]) -> None:
    if result.get("resultType") == "input_required" and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        raise MCPError(
            code=types.INTERNAL_ERROR,
            message="the upstream asked for client input (input_required), "
            f"which a {ctx.protocol_version} client cannot receive through mcpgw yet",
        )


def _instructions(gateway: Gateway) -> str:
    names = ", ".join(gateway.upstreams) or "none"
    return (
        "mcpgw gateway. Tools and prompts are named <server>__<name>; "
        f"resources of a server are mcpgw://<server>/<uri>. Servers: {names}."
    )


def notification_options() -> NotificationOptions:
    return NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


# --- transports ----------------------------------------------------------------------------------


async def _stop_on_signals(gateway: Gateway, stop: Callable[[], None]) -> None:
    """On SIGTERM, SIGINT or SIGHUP: drain in-flight requests up to the grace period, then `stop()`.

    A second signal during the drain stops at once.
    """
    grace = gateway.registry.gateway.drain_grace
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            async with anyio.create_task_group() as tg:

                async def on_second_signal() -> None:
                    async for _ in signals:
                        logger.info("second signal: stopping without waiting for in-flight requests")
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(on_second_signal)
                left = await gateway.drain(grace)
                if left:
                    logger.warning("%d request(s) still in flight after %gs; stopping them", left, grace)
                tg.cancel_scope.cancel()
            stop()
            return


class _PipeLines:
    """Lines of stdin read through the event loop, so a signal can cancel the read.

    The SDK's stdio server reads stdin in a worker thread that cancellation
    cannot interrupt: on SIGTERM the gateway would wait for the client's next
    line before it could stop its upstreams. Lines that are not JSON, or not a
    JSON-RPC 2.0 envelope, are answered here with -32700 / -32600 (the SDK
    would drop them silently, leaving a client waiting for an answer).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        reply: Callable[[dict[str, Any]], None] | None = None,
        *,
        limit: int,
    ) -> None:
        self._reader = reader
        self.reply = reply
        self._limit = limit

    async def _readline(self) -> bytes | None:
        """The next line, `b""` at EOF, or None for a line over the limit (skipped, never buffered)."""
        too_long = False
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                return None if too_long and exc.partial else exc.partial
            except asyncio.LimitOverrunError as exc:
                # Drop what is buffered so far and keep reading until the line ends.
                await self._reader.readexactly(exc.consumed)
                too_long = True
                continue
            return None if too_long else line

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            raw = await self._readline()
            if raw is None:
                if self.reply is not None:
                    self.reply(_too_large(self._limit))
                continue
            if not raw:
                raise StopAsyncIteration
            line = raw.decode("utf-8", errors="replace")
            problem = _envelope_problem(line) if self.reply is not None else None
            if problem is None:
                return line
            assert self.reply is not None
            self.reply(problem)


def _envelope_problem(line: str) -> dict[str, Any] | None:
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


def _too_large(limit: int) -> dict[str, Any]:
    return _error(
        None, types.INVALID_REQUEST, f"Request too large: over {limit} bytes ([gateway] max_request_bytes)"
    )


def _error(request_id: str | int | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class _PipeWriter:
    """stdout written through the event loop: no worker-thread hop per message (as the SDK does)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, data: str) -> None:
        self._writer.write(data.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()

    def send_now(self, message: dict[str, Any]) -> None:
        """Write one whole line (the event loop's transport keeps whole writes whole)."""
        self._writer.write((json.dumps(message) + "\n").encode("utf-8"))


def _is_pipe(fd: int) -> bool:
    """Only pipes and sockets go on the event loop (uvloop aborts on /dev/null, files cannot be polled)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def _event_loop_stdout() -> _PipeWriter | None:
    loop = asyncio.get_running_loop()
    if not _is_pipe(sys.stdout.fileno()):
        return None
    try:
        stdout = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    except (OSError, ValueError):
        return None
    return _PipeWriter(asyncio.StreamWriter(transport, protocol, None, loop))


async def _cancellable_stdin(limit: int) -> _PipeLines | None:
    loop = asyncio.get_running_loop()
    if not _is_pipe(sys.stdin.fileno()):
        return None
    reader = asyncio.StreamReader(limit=limit)
    try:
        stdin = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    except (OSError, ValueError):
        return None  # a regular file or no stdin at all: the SDK's reader copes with those
    return _PipeLines(reader, limit=limit)


async def serve_stdio(gateway: Gateway, persona: str | None = None) -> None:
    """Serve one client over stdin/stdout until it closes stdin or a signal arrives."""
    from mcp.server.stdio import stdio_server

    gateway.resolve_persona(persona)
    server, _ = build_server(gateway, persona=persona)
    stdin = await _cancellable_stdin(gateway.registry.gateway.max_request_bytes)
    stdout = await _event_loop_stdout()
    if stdin is not None and stdout is not None:
        stdin.reply = stdout.send_now
        # The channel now lives on duplicated descriptors; stray reads of fd 0 see EOF and stray
        # writes to fd 1 land in the log, as the SDK's own stdio server arranges.
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(sys.stderr.fileno(), 1)
    async with gateway.running(), anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signals, gateway, tg.cancel_scope.cancel)
        tg.start_soon(_check_personas, gateway)
        async with stdio_server(stdin=stdin, stdout=stdout) as (read, write):  # type: ignore[arg-type]
            await server.run(read, write, server.create_initialization_options(notification_options()))
        tg.cancel_scope.cancel()


def http_app(gateway: Gateway, *, host: str) -> Any:
    """`/mcp` for the default persona (or everything), `/personas/<name>/mcp` for each persona."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    server, _ = build_server(gateway)
    security = transport_security(gateway.registry, bind=host)
    from mcpgw.server import resume

    # As `server.streamable_http_app(...)`, plus an event store: dropped SSE streams can be resumed.
    app = resume.streamable_http_app(
        server, path="/mcp", security=security, max_body=gateway.registry.gateway.max_request_bytes
    )
    endpoint = next(r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/mcp")

    class PersonaEndpoint:
        """The `/mcp` app behind a check of the persona in the path (an ASGI app, so every method routes)."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            name = scope.get("path_params", {}).get(PERSONA_PATH_PARAM)
            if name not in gateway.registry.personas:
                known = sorted(gateway.registry.personas)
                response = JSONResponse(
                    {"error": f"unknown persona {name!r}", "personas": known}, status_code=404
                )
                await response(scope, receive, send)
                return
            await endpoint(scope, receive, send)

    app.router.routes.append(Route(f"/personas/{{{PERSONA_PATH_PARAM}}}/mcp", endpoint=PersonaEndpoint()))

    async def health(request: Any) -> JSONResponse:
        """For load balancers and monitors: 200 when every upstream is ready, else 503, with each state."""
        upstreams = {
            name: {
                "state": u.state,
                "protocol": u.protocol_version,
                "tools": len(u.lists["tools"]),
                "error": u.error,
            }
            for name, u in gateway.upstreams.items()
        }
        healthy = all(u["state"] == "ready" for u in upstreams.values())
        body = {"status": "ok" if healthy else "degraded", "upstreams": upstreams}
        return JSONResponse(body, status_code=200 if healthy else 503)

    app.router.routes.append(Route("/healthz", endpoint=health, methods=["GET"]))
    app.add_middleware(BodyLimit, limit=gateway.registry.gateway.max_request_bytes)
    if gateway.registry.auth is not None or gateway.registry.gateway.cors_origins:
        from mcpgw.server import auth

        auth.install(
            app,
            gateway.registry,
            mcp_path="/mcp",
            persona_path=f"/personas/{{{PERSONA_PATH_PARAM}}}/mcp",
            audit=gateway.audit,
        )
    return app


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 and a JSON-RPC error, never buffered whole.

    The SDK's own limit (given the same size) guards only the MCP endpoint and answers plain text;
    this one covers every route and answers in JSON-RPC, so clients can tell what happened.

    A declared Content-Length is checked up front; a chunked body is collected only up to the limit.
    """

    def __init__(self, app: Any, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) <= self.limit:
                await self.app(scope, receive, send)
            else:
                await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.responses import JSONResponse

        response = JSONResponse(_too_large(self.limit), status_code=413)
        await response(scope, receive, send)


async def _check_personas(gateway: Gateway) -> None:
    """Once upstreams have started, every persona must resolve; a broken one stops the gateway."""
    await gateway.wait_started()
    for warning in gateway.check_personas():
        logger.warning("%s", warning)


async def serve_http(
    gateway: Gateway,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Serve streamable HTTP at http://host:port/mcp until a signal arrives."""
    import uvicorn

    from mcpgw.server import auth

    auth.check_exposure(gateway.registry, host=host)
    app = http_app(gateway, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    web = uvicorn.Server(config)
    # uvicorn would re-raise a caught SIGTERM after serving, killing us before the upstreams are
    # stopped; our own receiver below asks it to exit instead, and cleanup then runs in order.
    web.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    async with gateway.running(), anyio.create_task_group() as tg:

        def stop() -> None:
            web.should_exit = True

        async def announce() -> None:
            while not web.started:
                await anyio.sleep(0.02)
            sockets = [s for server in web.servers for s in server.sockets]
            bound = sockets[0].getsockname()[1] if sockets else port
            url = f"http://{_url_host(host)}:{bound}/mcp"
            if on_ready is not None:
                await on_ready(url)

        tg.start_soon(_stop_on_signals, gateway, stop)
        tg.start_soon(_check_personas, gateway)
        tg.start_soon(announce)
        await web.serve()
        tg.cancel_scope.cancel()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def stderr_logging(level: int = logging.INFO) -> None:
    """The gateway's log goes to stderr: on stdio, stdout is the MCP channel."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK's per-session INFO lines would drown the gateway's own.
    for noisy in ("mcp", "uvicorn", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
