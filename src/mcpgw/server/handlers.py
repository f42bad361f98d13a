"""mcpgw as an MCP server: the request handlers, in both protocol eras.

Owns: the MCP request handlers (served from the gateway's in-memory catalog),
translating `GatewayError`s into MCP errors (nothing unexpected leaks raw), the
audit step each request is served as (and, tracing on, its span), and
`build_server`, which puts them on the SDK's lowlevel `Server` with the change
announcer (`notify`) and the listing cache (`listcache`). The transports that
serve it are `stdio` and `http`.

Why the mcp SDK's lowlevel `Server` and not fastmcp's `FastMCP`: a tool call
through fastmcp's full server pipeline measured about 2 ms extra (2.25x a direct
stdio call) on these machines; the lowlevel server serves both eras
(`initialize` and `server/discover`) with per-version result shaping, and lets
handlers return the upstream's raw result dicts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, cast

import mcp_types as types
from mcp.server import apps
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import RequestHandler, Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from mcpgw import _compat, audit, version
from mcpgw.bridge.channel import client_channel
from mcpgw.cluster.limits import Limiter
from mcpgw.core.gateway import Gateway
from mcpgw.core.memory import wait_listable
from mcpgw.errors import GatewayError
from mcpgw.observe import context as observe
from mcpgw.observe import tracing
from mcpgw.server import afteranswer, fastlane, observing
from mcpgw.server.flowsession import session_of
from mcpgw.server.listcache import ListingCache
from mcpgw.server.listening import ListenBridge
from mcpgw.server.notify import Announcer, log_sink, progress_relay
from mcpgw.server.ratelimit import limited
from mcpgw.upstream.logrelay import LogLevels

if TYPE_CHECKING:
    from mcpgw.security.flows import SessionRef

logger = logging.getLogger("mcpgw.server")

Ctx = ServerRequestContext[Any, Any]
Forward = Callable[[Ctx, str | None, "SessionRef | None", str | None], Awaitable[dict[str, Any]]]
"""A forwarding handler's request to the gateway: its context, persona, session and principal."""


_NAME_KEYS = {"call": "name", "prompt": "name", "read": "uri", "subscribe": "uri"}
_KINDS = {kind.value: kind for kind in audit.Kind}


async def _recorded(
    gateway: Gateway,
    ctx: Ctx,
    kind: str,
    persona: str | None,
    work: Callable[[], Awaitable[dict[str, Any]]],
    *,
    session: SessionRef | Literal[False] | None = False,
    principal: str | Literal[False] | None = False,
    forwarded: bool = False,
) -> dict[str, Any]:
    """Serve one request as one audit step: what, for whom, from which client, how it ended.

    The step's request id and persona are the request's observed fields (`observe.context`)
    too, which every log line of it carries; its outcome and time are counted in the metrics.
    `session`, `principal`: the request's `session_of` and `_principal`, when the caller has them
    already (False: found here). `forwarded`: `work` is a forwarding handler's (its result is
    answered as one: `_forwarded`).
    """
    raw = ctx.params or {}
    step = _step(gateway, ctx, _KINDS[kind], persona, session=session, principal=principal)
    if kind in _NAME_KEYS:
        step.name = str(raw.get(_NAME_KEYS[kind]))
    elif kind == "list":
        step.name = ctx.method
    if kind in ("call", "prompt"):
        step.arguments = raw.get("arguments")
    log = gateway.audit
    deferred = log is not None and not log.every_request  # rows waited for (`durable = "all"`): now
    # Plain try blocks, not context managers (`observe.serving`, `audit.recording`) and a coroutine for
    # the error translation: the same steps, in the same order, at a fraction of the CPU per request.
    answer: dict[str, Any] | None = None  # the row's account of it is made as the row is handed over
    fields, serving = observe.entered(request_id=step.request_id, persona=step.persona)
    try:
        with observing.request_span(gateway, ctx, step) as span:
            try:
                recording = audit.entered(step)
                try:
                    try:
                        result = await work()
                        if forwarded:
                            _forwarded(gateway, ctx, result)
                    except GatewayError as exc:  # the one place gateway errors become MCP errors
                        raise MCPError(code=exc.jsonrpc_code, message=str(exc), data=exc.data) from exc
                    except MCPError:
                        raise
                    except Exception as exc:  # unexpected ones are logged, never leaked
                        logger.exception("internal error while serving a request")
                        raise MCPError(code=types.INTERNAL_ERROR, message=_INTERNAL) from exc
                    if result.get("isError"):
                        if step.outcome is audit.Outcome.OK:  # a flow policy's refusal says `blocked`
                            step.outcome = audit.Outcome.ERROR
                        step.error = _first_text(result)
                        tracing.failed(span, "tool_error")
                    answer = result
                    return result
                except BaseException as exc:
                    step.ended_by(exc)
                    raise
                finally:
                    audit.left(recording)
                    if log is not None and not deferred:  # `durable = "all"`: the answer waits for its row
                        _account(step, answer)
                        await log.commit(step)  # queued before the wait: a cancelled request's row is kept
            except MCPError as exc:
                code = str(exc.error.code)
                tracing.annotate(span, {"rpc.response.status_code": code})
                tracing.failed(span, code, exc.error.message)
                raise
            finally:
                if span is not None:
                    observing.finish_span(span, gateway, ctx, step, fields)
                if deferred and log is not None and audit.durable(step.kind, step.outcome):
                    _account(step, answer)
                    log.record_step(step)  # committed before the answer leaves, as ever
                    deferred = False
                booked = partial(_booked, gateway, ctx, step, fields, log if deferred else None, answer)
                afteranswer.later(booked)
    finally:
        observe.left(serving)


_INTERNAL = "mcpgw internal error (see the gateway log)"


def _forwarded(gateway: Gateway, ctx: Ctx, result: dict[str, Any]) -> None:
    """A forwarded request's result as its client's era takes it (`_check_era`, `_shaped`), and the
    version it was checked in said (`fastlane.answered_by`)."""
    fastlane.answered_by(gateway)
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        if "resultType" not in result:
            result["resultType"] = "complete"
    else:
        _check_era(ctx, result)


def _account(step: audit.Step, result: dict[str, Any] | None) -> None:
    """A call's result as its row keeps it, made as the row is handed over (after the answer, when it
    is; a refusal's account of its steps stays)."""
    if result is not None and step.kind is audit.Kind.CALL and step.result is None:
        step.result = result.get("structuredContent") or _first_text(result)


def _booked(
    gateway: Gateway,
    ctx: Ctx,
    step: audit.Step,
    fields: observe.Fields,
    log: audit.AuditLog | None,
    answer: dict[str, Any] | None = None,
) -> None:
    """A request's row queued (when not already), counted and, at `--log-level debug`, logged, under
    the request's own fields (it may run after the request's answer, outside them)."""
    resumed = observe.back(fields)
    try:
        if log is not None:
            _account(step, answer)
            log.record_step(step)
        if gateway.metrics is not None and step.kind is not audit.Kind.LIST:  # `listings_counted`
            observing.count(gateway.metrics, gateway, ctx, step, fields)
        if logger.isEnabledFor(logging.DEBUG):  # an access log
            logger.debug(
                "%s%s: %s in %.1f ms",
                ctx.method,
                f" {step.name}" if step.name and step.name != ctx.method else "",
                step.outcome,
                (time.perf_counter() - step.started) * 1000,
            )
    finally:
        observe.left(resumed)


def _step(
    gateway: Gateway,
    ctx: Ctx,
    kind: audit.Kind,
    persona: str | None,
    *,
    session: SessionRef | Literal[False] | None = False,
    principal: str | Literal[False] | None = False,
) -> audit.Step:
    """A step for the request `ctx` serves: who asked, from which client, in which era (`session`,
    `principal`: its `session_of` and `_principal`, when the caller has them; False: found here)."""
    if session is False:
        session = session_of(ctx)
    return audit.Step(
        kind=kind,
        method=ctx.method,
        persona=observing.persona_label(gateway, persona),
        client=_client_name(ctx),
        protocol=ctx.protocol_version,
        principal=_principal(ctx) if principal is False else principal,
        session=session.id if session is not None else None,
    )


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
    return (_auth_principal or _http_principal())(scope)


_auth_principal: Callable[[Any], str | None] | None = None


def _http_principal() -> Callable[[Any], str | None]:
    """`server.auth.principal`, imported once, on the first request with `[auth]` (as `flowsession`'s
    `client_of`: the HTTP side is only loaded over HTTP, and not looked up again on every request)."""
    global _auth_principal
    from mcpgw.server import auth

    _auth_principal = auth.principal
    return auth.principal


def _first_text(result: dict[str, Any]) -> str | None:
    for item in result.get("content") or []:
        if isinstance(item, dict) and item.get("type") == "text":
            return str(item.get("text"))[:2000]
    return None


def _raw(ctx: Ctx) -> Mapping[str, Any]:
    """The request's params, not copied: the pipeline reads them and builds the upstream's own."""
    return ctx.params or {}


def _shaped(ctx: Ctx, result: dict[str, Any]) -> dict[str, Any]:
    """2026-07-28 results must say their `resultType`; the SDK adds it to typed results, not dicts."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and "resultType" not in result:
        result["resultType"] = "complete"
    return result


PERSONA_PATH_PARAM = "persona"
HTTP_PERSONA: ContextVar[str | None] = ContextVar("mcpgw_http_persona", default=None)
"""The persona the URL path of the HTTP request in hand names (`http.PersonaEndpoint` sets it), for
what the SDK runs before a handler has the request: the `Mcp-Param-*` header check."""


def build_server(
    gateway: Gateway, *, persona: str | None = None, limiter: Limiter | None = None
) -> tuple[Server[Any], Announcer]:
    """The MCP server that serves `gateway`'s catalog.

    On stdio the persona is fixed by `persona`; on HTTP each request's persona
    comes from its URL path (`/personas/<name>/mcp`), never from session state,
    so one session cannot carry a persona across endpoints. `limiter`: `[limits]` (`ratelimit`).
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
                await wait_listable(gateway)  # from the last run's catalog while upstreams start
                return _shaped(ctx, {key: getattr(gateway.view(persona_of(ctx)), attribute)})

            return await _recorded(gateway, ctx, "list", persona_of(ctx), work)

        return handler

    def forwarding(kind: str, forward: Forward) -> RequestHandler[Any, Any]:
        def handler(ctx: Ctx, params: Any) -> Awaitable[dict[str, Any]]:
            """`_recorded`'s own coroutine (no frame of this handler on the way of every call)."""
            # Each worked out once a request: the step and the bridge's channel share the principal.
            persona, principal = persona_of(ctx), _principal(ctx)
            session = session_of(ctx, principal=principal)
            work = partial(forward, ctx, persona, session, principal)
            return _recorded(
                gateway, ctx, kind, persona, work, session=session, principal=principal, forwarded=True
            )

        return handler

    def input_schema(name: str) -> dict[str, Any] | None:
        """The schema the 2026-07-28 `Mcp-Param-*` header check reads: the tool as the caller's persona
        lists it. A tool the persona cannot see has none, so the call is answered as unknown, as
        every call outside the persona is: the check must not tell that the tool exists."""
        try:
            return gateway.view(HTTP_PERSONA.get() or persona).input_schema(name)
        except GatewayError:
            return None

    announcer = Announcer()
    log_levels = LogLevels()

    async def set_level(ctx: Ctx, params: types.SetLevelRequestParams) -> dict[str, Any]:
        """`logging/setLevel` (handshake era): the least severe upstream log line this connection gets."""
        connection = _compat.session_connection(ctx.session)
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
        get_tool_input_schema=input_schema,
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
                lambda ctx, p, session, principal: gateway.call_tool(
                    _raw(ctx),
                    persona=p,
                    on_progress=progress_relay(ctx),
                    on_log=log_sink(ctx, log_levels),
                    client=client_channel(ctx, principal=principal),
                    session=session,
                ),
            ),
        ),
        (
            "resources/read",
            types.ReadResourceRequestParams,
            forwarding(
                "read",
                lambda ctx, p, session, principal: gateway.read_resource(
                    _raw(ctx), persona=p, client=client_channel(ctx, principal=principal), session=session
                ),
            ),
        ),
        (
            "prompts/get",
            types.GetPromptRequestParams,
            forwarding(
                "prompt",
                lambda ctx, p, _, principal: gateway.get_prompt(
                    _raw(ctx), persona=p, client=client_channel(ctx, principal=principal)
                ),
            ),
        ),
        (
            "completion/complete",
            types.CompleteRequestParams,
            forwarding("complete", lambda ctx, p, _, __: gateway.complete(_raw(ctx), persona=p)),
        ),
    ]
    for method, params_type, handler in handlers:
        server.add_request_handler(method, params_type, handler)
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    for method, on in (("resources/subscribe", True), ("resources/unsubscribe", False)):
        server.add_request_handler(
            method, types.SubscribeRequestParams, _subscription(gateway, persona_of, on)
        )
    # mcpgw carries MCP Apps (`ui://` resources and the `_meta` naming them, see `catalog`), so it says so
    # to clients whatever its upstreams declare: a host looks for the extension before rendering.
    server.extensions[apps.EXTENSION_ID] = {}
    # Replaces the default OpenTelemetry middleware: the call path stays lean (see module docstring),
    # and `observing.request_span` opens the request's span only while tracing is on, with what only mcpgw
    # knows (persona, server, outcome) and the HTTP `traceparent` as a parent when `_meta` has none.
    cache = ListingCache(
        gateway, persona_of, record=lambda ctx, work: _recorded(gateway, ctx, "list", persona_of(ctx), work)
    )
    server.middleware = [
        announcer.track,
        limited(gateway, persona_of, limiter=limiter),
        cache,
        fastlane.LeanCalls(server),
    ]
    gateway.add_listener(announcer)
    if gateway.metrics is not None:
        server.middleware.insert(1, observing.listings_counted(gateway, gateway.metrics, persona_of))
    return server, announcer


_FORGETS = "mcpgw.forgets-subscriptions"
"""Connection state key: its upstream subscriptions are dropped when it closes."""


def _subscription(
    gateway: Gateway, persona_of: Callable[[Ctx], str | None], on: bool
) -> RequestHandler[Any, Any]:
    """`resources/subscribe` and `unsubscribe` (handshake era): updates go to this connection."""

    async def handler(ctx: Ctx, params: Any) -> dict[str, Any]:
        connection = _compat.session_connection(ctx.session)

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
        "resources of a server are mcpgw://<server>/<uri> (UI resources: ui://<server>/<rest>). "
        f"Servers: {names}."
    )
