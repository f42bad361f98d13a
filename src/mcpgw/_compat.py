"""Every use of another library's private API, one function per use.

Owns: nothing but these shims. Each says which version it was written against
and why the public API does not serve; a library upgrade that breaks one breaks
it here, in one place, and the tests that cover the caller say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx2
    import uvicorn
    from fastmcp.server.auth.middleware import RequireAuthMiddleware
    from mcp.client.session import ClientSession
    from mcp.server.connection import Connection
    from mcp.server.lowlevel.server import Server
    from mcp.server.session import ServerSession
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.types import Send


def in_memory_transport(server: Any) -> AbstractAsyncContextManager[tuple[Any, Any]]:
    """Client streams to `server` (a lowlevel `Server` or `MCPServer`) run in this process.

    mcp 2.3: `mcp.client._memory.InMemoryTransport` is what `Client(server)` uses, but it is only
    reachable from the private module. Used for in-process upstreams (the tests' parity harness)."""
    from mcp.client._memory import InMemoryTransport

    return InMemoryTransport(server)


def session_connection(session: ServerSession) -> Connection | None:
    """The `Connection` a request's session belongs to; None if the SDK no longer keeps it there.

    mcp 2.3: a handler's `ServerSession` keeps it in `_connection` (only `Context`, which the runner
    does not build, exposes it). The gateway needs it for the log level a handshake-era client set,
    standalone list changes, and subscriptions dropped when the connection closes."""
    return getattr(session, "_connection", None)


def uvicorn_without_signal_capture(server: uvicorn.Server) -> None:
    """Keep `server` from installing its own signal handlers and re-raising what they caught.

    uvicorn 0.54: `Server.serve` runs inside `capture_signals()`, which re-raises a caught SIGINT or
    SIGTERM once serving ends, killing the gateway before its upstreams are stopped; no setting. The
    gateway takes signals itself (`server.lifecycle.stop_on_signals`) and asks uvicorn to exit."""
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]


def set_session_manager(server: Server[Any], manager: StreamableHTTPSessionManager) -> None:
    """Make `manager` what `server.session_manager` returns.

    mcp 2.3: a read-only property over `_session_manager`, set only by `Server.streamable_http_app`.
    The gateway builds that app itself, with its own manager (resumable streams: `server.resume`)."""
    server._session_manager = manager


async def send_auth_error(
    middleware: RequireAuthMiddleware, send: Send, status_code: int, error: str, description: str
) -> None:
    """Answer with `middleware`'s RFC 6750 error: JSON body and `WWW-Authenticate` challenge.

    fastmcp 4.2: `RequireAuthMiddleware._send_auth_error` builds the challenge (error, description,
    scopes, resource metadata URL) its own 401/403 answers carry; the gateway answers a token that
    does not grant the requested persona with the same 403 `insufficient_scope`."""
    await middleware._send_auth_error(send, status_code, error, description)


def negotiate_auto(session: ClientSession) -> Awaitable[None]:
    """Negotiate `session`'s protocol era: `server/discover`, falling back to `initialize`.

    mcp 2.3: `mcp.client._probe.negotiate_auto` is the policy `Client(mode="auto")` runs at connect,
    but `ClientSession` has no public method for it. Used for upstreams configured `era = "auto"`."""
    from mcp.client._probe import negotiate_auto

    return negotiate_auto(session)


def mcp_http_client(
    *, headers: dict[str, str] | None, auth: httpx2.Auth | None, http2: bool = False
) -> httpx2.AsyncClient:
    """An HTTP client with the MCP transports' default timeouts (30s, and 300s to read a stream).

    mcp 2.3: `mcp.shared._httpx_utils.create_mcp_http_client` is what `streamable_http_client` builds
    when given none; we build it ourselves so one pooled client (and its auth) serves a whole session.
    `http2`: HTTP/2 offered as well (its factory has no such flag), with the same timeouts."""
    from mcp.shared import _httpx_utils as sdk

    if not http2:
        return sdk.create_mcp_http_client(headers=headers, auth=auth)
    import httpx2

    timeout = httpx2.Timeout(sdk.MCP_DEFAULT_TIMEOUT, read=sdk.MCP_DEFAULT_SSE_READ_TIMEOUT)
    return httpx2.AsyncClient(http2=True, timeout=timeout, headers=headers, auth=auth)


def notice_closed_idle_http2() -> None:
    """Drop an idle HTTP/2 connection the server closed (its idle timeout, a restart) before reuse, as
    httpcore2 2.16 does an HTTP/1.1 one (whose `has_expired` probes the idle socket; HTTP/2's only counts
    5 s): a request written to it failed the upstream (`WriteError`). A readable idle socket = expired."""
    from httpcore2._async.http2 import AsyncHTTP2Connection as H2

    if not getattr(H2, "_mcpgw_probed", False):

        def expired(self: H2, clock_only: Any = H2.has_expired) -> bool:
            readable = self.is_idle() and self._network_stream.get_extra_info("is_readable")
            return bool(clock_only(self) or readable)

        H2.has_expired, H2._mcpgw_probed = expired, True  # type: ignore[method-assign,attr-defined]


def skip_tool_result_validation(session: ClientSession) -> None:
    """Stop `session` checking `tools/call` results against the tool's output schema.

    mcp 2.3: `ClientSession.validate_tool_result` has no switch. mcpgw passes results through as the
    upstream sent them: checking structured output is the downstream client's business."""

    async def _no_validation(name: str, result: Any) -> None:
        return None

    session.validate_tool_result = _no_validation  # type: ignore[method-assign]


def direct_progress_requested(session: ServerSession) -> bool:
    """Whether the in-process caller of this request asked for progress (a callback, no token).

    mcp 2.3: an in-process request (`Client(server)`) carries its progress callback on its
    `DirectDispatchContext._on_progress`, kept by the session as `_request_outbound` (for 2026-07-28,
    wrapped, as `_inner`); over JSON-RPC the token is in `_meta`. Without this the gateway would drop
    such a client's progress or ask every upstream for progress nobody reads."""
    outbound = getattr(session, "_request_outbound", None)
    # A 2026-07-28 request's context is wrapped (`runner._NoServerRequestsDispatchContext._inner`).
    outbound = getattr(outbound, "_inner", outbound)
    return getattr(outbound, "_on_progress", None) is not None


def connection_closed(session: ClientSession) -> bool:
    """Whether `session`'s connection to its server is gone (its dispatcher saw the end of the stream).

    mcp 2.3: `MCPError(CONNECTION_CLOSED)` comes both when the transport ends and when the peer answers
    with that code; only the dispatcher's (`_dispatcher`) `_closed` flag tells them apart. An unknown
    shape counts as open: the supervisor still notices a real loss."""
    dispatcher = getattr(session, "_dispatcher", None)
    return getattr(dispatcher, "_closed", False) is True


def session_transport(manager: StreamableHTTPSessionManager, session_id: str) -> Any:
    """The transport (a `StreamableHTTPServerTransport`) of an open session; None if there is none.

    mcp 2.3: the session manager keeps its sessions in `_server_instances` and offers no lookup.
    The gateway bounds sessions per client and in all (`server.sessions`) and closes idle ones to
    make room, through the transport's public `terminate()` and `is_terminated`."""
    return manager._server_instances.get(session_id)


def http_protocol(
    *,
    header_timeout: float,
    max_header_bytes: int,
    wrap_transport: Callable[[asyncio.Transport], Any] | None = None,
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools) with a deadline and a size limit for request headers.

    uvicorn 0.54 has neither: its keep-alive timer is armed only once a response is complete and
    disarmed by any byte (a header sent a byte at a time holds a connection for ever), and httptools
    buffers a header of any size (100 MB of one value cost 200 MB). A timer armed at connect and after
    each answer, disarmed once headers are in, closes an idle connection (`cycle`); past
    `max_header_bytes` the client gets 431. `loop`, `transport`, `cycle` and those callbacks have no
    public contract. `wrap_transport`: what the protocol writes through instead (`server.coalesce`)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderBoundProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_deadline: asyncio.TimerHandle | None = None
            self.header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(wrap_transport(transport) if wrap_transport is not None else transport)
            self.await_headers()

        def data_received(self, data: bytes) -> None:
            awaiting = self.header_deadline is not None
            super().data_received(data)
            if awaiting and self.header_deadline is not None:
                self.header_bytes += len(data)
                if self.header_bytes > max_header_bytes and not self.transport.is_closing():
                    self.stop_awaiting()
                    self.transport.write(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                        b"content-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    self.transport.close()

        def on_headers_complete(self) -> None:
            self.stop_awaiting()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self.await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_awaiting()
            super().connection_lost(exc)

        def await_headers(self) -> None:
            self.stop_awaiting()
            self.header_bytes = 0
            self.header_deadline = self.loop.call_later(header_timeout, self.headers_late)

        def stop_awaiting(self) -> None:
            if self.header_deadline is not None:
                self.header_deadline.cancel()
                self.header_deadline = None

        def headers_late(self) -> None:
            self.header_deadline = None
            serving = self.cycle is not None and not self.cycle.response_complete
            if not serving and not self.transport.is_closing():
                self.transport.close()

    return HeaderBoundProtocol


def absorb_tool_listing(session: ClientSession, tools: list[Any], *, complete: bool) -> set[str]:
    """Hand `session` a `tools/list` page sent raw, as its own `list_tools` would; the tool names it kept.

    mcp 2.3: `ClientSession.list_tools` passes each page to `_absorb_tool_listing`, which (2026-07-28)
    drops tools with invalid `x-mcp-header` annotations and caches each kept tool's `Mcp-Param-*`
    header map for the stamp of every `tools/call`. mcpgw lists raw dicts, so without this its calls
    would lack those headers. `complete` (one uncursored page): forget tools no longer listed."""
    import mcp_types as types

    kept = session._absorb_tool_listing(types.ListToolsResult(tools=tools), complete=complete)
    return {tool.name for tool in kept.tools}


def complete_without_result_type(session: ClientSession) -> None:
    """Make `session` read a 2026-07-28 result that has no `resultType` as `complete` (as the spec has
    it; real servers omit it). mcp 2.3: `ClientSession.send_request` validates every result against the
    negotiated schema, which requires it, with no switch: the raw result is completed before that, in
    the session's `_dispatcher.send_raw_request`."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS as modern

    dispatcher = session._dispatcher
    send_raw_request = dispatcher.send_raw_request

    async def completed(method: str, params: Any, opts: Any = None) -> Any:
        raw = await send_raw_request(method, params, opts)
        if isinstance(raw, dict) and "resultType" not in raw and session.protocol_version in modern:
            raw["resultType"] = "complete"
        return raw

    dispatcher.send_raw_request = completed  # type: ignore[method-assign]


def keep_request_capabilities(session: ClientSession) -> None:
    """Let a 2026-07-28 request's own `_meta` clientCapabilities stand instead of the session's (a
    server judges each request by them, -32021, and the session serves all clients). mcp 2.3: a modern
    `ClientSession`'s `_stamp` overwrites them, with no per-request override. Call once negotiated."""
    from mcp_types import CLIENT_CAPABILITIES_META_KEY

    stamp = session._stamp

    def stamp_keeping(data: dict[str, Any], opts: Any) -> None:
        meta = (data.get("params") or {}).get("_meta")
        own = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
        stamp(data, opts)
        if own is not None:
            data["params"]["_meta"][CLIENT_CAPABILITIES_META_KEY] = own

    session._stamp = stamp_keeping


def fastmcp_lowlevel_server(server: Any) -> Any:
    """The lowlevel mcp `Server` of a fastmcp `FastMCP` server, for `in_memory_transport`.

    fastmcp 4.2: `FastMCP` keeps its lowlevel `Server` in `_mcp_server` (its own in-memory transport
    reads it there too); the SDK's `InMemoryTransport` takes only a lowlevel `Server` or `MCPServer`.
    Running it enters the FastMCP lifespan (fastmcp's lifespan proxy). Used for OpenAPI upstreams."""
    return server._mcp_server


def jwt_bearer_provider(
    server_url: str,
    storage: Any,
    *,
    client_id: str,
    assertion: Callable[[], Awaitable[str]],
    scope: str | None,
    issuer: str | None,
) -> Any:
    """The mcp SDK's client-credentials provider (discovery, the issuer check, token handling)
    sending the RFC 7523 jwt-bearer grant with `assertion()` instead (workload identity federation).

    mcp 2.3: its `IdentityAssertionOAuthProvider` sends this grant but only for a confidential client
    and a configured issuer (no discovery); the token request is built by the private
    `_exchange_token_client_credentials`, overridden here, as its own `PrivateKeyJWTOAuthProvider` does."""
    import httpx2
    from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
    from mcp.shared.auth import JWT_BEARER_GRANT_TYPE

    class JwtBearer(ClientCredentialsOAuthProvider):
        async def _exchange_token_client_credentials(self) -> httpx2.Request:
            from mcp.client.auth.extensions.client_credentials import _require_metadata_for_configured_issuer

            _require_metadata_for_configured_issuer(self.context, issuer)
            data = {
                "grant_type": JWT_BEARER_GRANT_TYPE,
                "assertion": await assertion(),
                "client_id": client_id,
            }
            if self.context.should_include_resource_param(self.context.protocol_version):
                data["resource"] = self.context.get_resource_url()
            if scope:
                data["scope"] = scope
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            return httpx2.Request("POST", self._get_token_endpoint(), data=data, headers=headers)

    return JwtBearer(server_url, storage, client_id=client_id, client_secret="", scope=scope, issuer=issuer)


def stamp_request(session: ClientSession, data: dict[str, Any]) -> dict[str, str]:
    """Stamp a request (`{"method", "params"}`) as `session.send_request` would; returns the HTTP headers
    the stamp adds. mcp 2.3: `ClientSession._stamp` puts the era's envelope (2026-07-28: `_meta` and
    headers) on every request; the lean paths (`upstream.wire`, `httpwire`) send theirs themselves."""
    opts: dict[str, Any] = {}
    session._stamp(data, opts)  # type: ignore[arg-type]
    return dict(opts.get("headers") or {})


def checked_result(session: ClientSession, method: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A raw result as `session.send_request` leaves it before typing it: a 2026-07-28 result without
    `resultType` read as `complete`, a negative `ttlMs` floored, checked against the negotiated version's
    schema (by `shapes` for the common shapes, else by pydantic, raising its `ValidationError`), a later
    revision's fields dropped. mcp 2.3: inline in `send_request`, with `_clamp_inbound_ttl` and
    `_later_revision_fields` private; the lean path receives results itself and checks them so, once."""
    modern, clamp, validate, known, drop = _result_check(method, session._negotiated_version or "2025-11-25")
    if "resultType" not in raw and modern:
        raw["resultType"] = "complete"
    clamp(raw)
    if validate is not None and (known is None or not known(raw)):
        validate(raw)
    return raw if drop.isdisjoint(raw) else {k: v for k, v in raw.items() if k not in drop}


@functools.cache
def _result_check(method: str, version: str) -> tuple[bool, Callable[..., None], Any, Any, Any]:
    """`checked_result`'s steps per method and version, looked up once. mcp_types 2.3:
    `validate_server_result` validates (`methods._adapter`), then dumps and drops (cannot fail)."""
    from mcp.client.session import _clamp_inbound_ttl, _later_revision_fields
    from mcp_types import methods
    from mcp_types.version import KNOWN_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

    from mcpgw import shapes

    surface = methods.SERVER_RESULTS.get((method, version))
    validate: Callable[..., Any] | None = None
    if version not in KNOWN_PROTOCOL_VERSIONS:
        validate = functools.partial(methods.validate_server_result, method, version)
    elif surface is not None:
        validate = functools.partial(methods._adapter(surface).validate_python, by_name=False)
    foreign = _later_revision_fields(method, version)
    known = shapes.result_check(method, version)  # None for a version or method it has no check for
    return version in MODERN_PROTOCOL_VERSIONS, _clamp_inbound_ttl, validate, known, foreign


def stream_within_origin(
    client: httpx2.AsyncClient, method: str, url: httpx2.URL | str, **kwargs: Any
) -> Any:
    """`client.stream(...)` following redirects only within the endpoint's origin, as the SDK's
    streamable HTTP transport posts.

    mcp 2.3: `mcp.shared._httpx_utils.stream_within_origin` is that transport's own; the lean HTTP
    path (`upstream.httpwire`) posts requests itself and must follow redirects by the same rule."""
    from mcp.shared._httpx_utils import stream_within_origin

    return stream_within_origin(client, method, url, **kwargs)


def unfollowed_redirect(response: httpx2.Response) -> str | None:
    """Why a redirect response was not followed (None: it is no redirect), in the SDK's words.

    mcp 2.3: `mcp.client.streamable_http._unfollowed_redirect` is the message the SDK's transport
    answers such a POST with; the lean HTTP path answers it the same."""
    from mcp.client.streamable_http import _unfollowed_redirect

    return _unfollowed_redirect(response)


def deliver_notification(
    session: ClientSession, method: str, params: dict[str, Any] | None
) -> Awaitable[None]:
    """Hand a notification the upstream sent to `session` as if its transport had read it (the lean
    paths read the pipe or a POST's SSE stream themselves). mcp 2.3: `ClientSession._on_notify` validates
    it for the negotiated version and runs the session's callbacks; its dispatch context is not read."""
    return session._on_notify(None, method, params)  # type: ignore[arg-type]


def wrap_network_backend(client: httpx2.AsyncClient, wrap: Callable[[Any], Any]) -> None:
    """Make `client`'s connections through `wrap(its network backend)` (`upstream.cork`).

    httpx2 2.16 / httpcore2: no way to pass a network backend; it is kept in `_transport._pool.
    _network_backend`. A client with another kind of transport (a proxy) is left as it is."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = wrap(backend)  # type: ignore[union-attr]


def admit_session(manager: StreamableHTTPSessionManager, requestor: Any, *, prefix: str) -> Any:
    """mcp 2.3: `StreamableHTTPSessionManager._admit_session` names a new session `uuid4().hex`, with
    no hook for the name. Behind a load balancer that routes a session to the replica that holds it
    (`[cluster]`, see `deploy/nginx.conf`), the id must say which replica that is: it is admitted as
    the SDK does, then renamed `<prefix><hex>` in the manager's tables before anyone has seen it."""
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager as Manager

    transport = Manager._admit_session(manager, requestor)
    if transport is None or not prefix:
        return transport
    old = str(transport.mcp_session_id)
    new = prefix + old
    transport.mcp_session_id = new
    manager._server_instances[new] = manager._server_instances.pop(old)
    if old in manager._session_owners:
        manager._session_owners[new] = manager._session_owners.pop(old)
    return transport


def exit_stack_empty(stack: contextlib.AsyncExitStack) -> bool:
    """Whether nothing was pushed on `stack`, so unwinding it has nothing to do.

    Python 3.11-3.13 `contextlib`: the callbacks are in `_exit_callbacks`, with no public way to ask.
    The lean lane (`server.leanlane`) unwinds a 2026-07-28 request's connection stack as the SDK does
    (`aclose_shielded`: a timer per call) only when it is not empty. Unknown internals: not empty."""
    return not getattr(stack, "_exit_callbacks", True)


def process_stdin_writer(stdin: Any) -> asyncio.StreamWriter | None:
    """The asyncio `StreamWriter` under an anyio process's stdin (None: anyio keeps none). anyio 4.16:
    its `send` yields to the loop after each write, a loop turn per lean request; `_stream` does not."""
    stream = getattr(stdin, "_stream", None)
    return stream if isinstance(stream, asyncio.StreamWriter) else None


def take_stdout(stdout: Any, feed: Callable[[bytes], None], end: Callable[[], None]) -> Any:
    """Have the pipe's protocol hand an anyio process's stdout to `feed` as it arrives, its end to `end`;
    returns the pipe's transport (to pause reading), None if anyio keeps no asyncio reader. anyio 4.16,
    asyncio 3.11: the protocol calls its `StreamReader`'s (`_stream`) `feed_data`, `feed_eof`,
    `set_exception`, then a reading task must wake: a loop turn per answer. Its `_buffer` goes first."""
    reader = getattr(stdout, "_stream", None)
    transport = getattr(reader, "_transport", None)
    if not isinstance(reader, asyncio.StreamReader) or transport is None:
        return None
    early, eof = bytes(reader._buffer), reader._eof  # type: ignore[attr-defined]
    reader._buffer.clear()  # type: ignore[attr-defined]
    reader.feed_data, reader.feed_eof = feed, end  # type: ignore[method-assign,assignment]
    reader.set_exception = lambda exc: end()  # type: ignore[method-assign]
    if reader._paused:  # type: ignore[attr-defined]
        transport.resume_reading()
    if early:
        feed(early)
    if eof:
        end()
    return transport


def lifespan_state(manager: StreamableHTTPSessionManager) -> Any:
    """The server lifespan's state, as the session manager hands it to each 2026-07-28 request.

    mcp 2.3: `run` keeps what `Server.lifespan` yields in `_lifespan_state`; the lean stateless path
    (`server.stateless`) serves those requests itself and passes the same state to `serve_one`."""
    return manager._lifespan_state


def sse_response_headers() -> list[tuple[bytes, bytes]]:
    """The headers the SDK's 2026-07-28 entry begins an SSE answer with.

    mcp 2.3: `mcp.server._streamable_http_modern._SSE_HEADERS`; the lean stateless path
    (`server.stateless`) turns an answer into a stream as that entry does, with the same headers."""
    from mcp.server._streamable_http_modern import _SSE_HEADERS

    return list(_SSE_HEADERS)


def oauth_initialized(provider: Any) -> bool:
    """Whether an `OAuthClientProvider` has loaded its stored tokens and client (its first request did).

    mcp 2.3: kept in `_initialized`, loaded under its lock; `upstream.login.LoginAuth` sends outside
    that lock only once they are loaded and there is no token to send (`_nothing_to_send`)."""
    return bool(getattr(provider, "_initialized", False))
