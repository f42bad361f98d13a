"""The shared session to one upstream: its protocol era, what it said about itself, and requests to it.

Owns: opening the mcp SDK's `ClientSession` over a transport's streams and negotiating its
protocol era (`server/discover`, the `initialize` handshake, or the first with fallback to the
second, telling a probe that failed without an answer, `ProbeFailed`, from a server's verdict);
relaying requests as raw dicts so nothing the upstream sent is dropped, within the upstream's call
slots (`max_concurrent`), its timeouts and its result size limit; handing each 2026-07-28 tool
listing to the SDK session as its own `list_tools` would, so calls carry the tools' `Mcp-Param-*`
headers and tools with invalid `x-mcp-header` annotations are withheld; and translating the mcp
client's errors into `UpstreamError`s at this one boundary.

Why not fastmcp's proxy provider: measured on fastmcp 4.2.3, it validated handshake-era list
results against 2026-only fields (dropping server-everything's tools), re-spawned stdio upstreams when
client eras switched, opened a new HTTP session per call and started upstreams lazily. mcpgw keeps
one session per upstream, opened at start, on the SDK's `ClientSession`.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession, MessageHandlerFnT
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import find_invalid_x_mcp_header
from mcp_types import CLIENT_CAPABILITIES_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter, ValidationError

from mcpgw import _compat, version
from mcpgw.config import Era
from mcpgw.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from mcpgw.observe import tracing
from mcpgw.upstream.answers import Answers
from mcpgw.upstream.wire import UNSIZED, LeanWire, WireClosed, stamp_of

if TYPE_CHECKING:  # loaded with the first URL upstream (`upstream.transports`)
    from mcpgw.upstream.httpwire import HttpWire
logger = logging.getLogger("mcpgw.upstream")

ProgressRelay = Callable[[float, float | None, str | None], Awaitable[None]]

_RAW = TypeAdapter(dict[str, Any])
TIMER_STEP = 0.002
"""Slack when telling the SDK's own timeout from an upstream's error with the same code: a loop's
timer may fire up to one clock step (uvloop: 1 ms) early."""
_RESERVED_META_PREFIX = "io.modelcontextprotocol/"
_reserved = operator.methodcaller("startswith", _RESERVED_META_PREFIX)
LEAN_METHODS = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
"""Requests a client's call forwards, sent on the lean path where the transport has one (stdio)."""


def era_of(protocol_version: str | None) -> str:
    if protocol_version is None:
        return "-"
    return "stateless" if protocol_version in MODERN_PROTOCOL_VERSIONS else "handshake"


def forwardable_meta(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A downstream request's `_meta` minus what belongs to the downstream hop.

    The protocol's own keys (version, client info, capabilities) and the
    progress token are per-connection; the upstream session stamps its own.
    """
    if not meta:
        return None
    kept = {k: v for k, v in meta.items() if k != "progressToken" and not k.startswith(_RESERVED_META_PREFIX)}
    return kept or None


def without_capabilities(meta: Any) -> dict[str, Any] | None:
    """A request's `_meta` without the caller's capabilities stamp (None when nothing is left)."""
    if not isinstance(meta, dict):
        return None
    kept = {k: v for k, v in meta.items() if k != CLIENT_CAPABILITIES_META_KEY}
    return kept or None


class UpstreamReplyError(UpstreamError):
    """The upstream answered with a JSON-RPC error: relayed downstream as it came (code, message, data).

    The error is the upstream's data, whatever its code: -32000 ("connection closed") or -32001
    ("request timeout") from an upstream say nothing about mcpgw's connection to it.
    """

    def __init__(self, server: str, error: types.ErrorData) -> None:
        super().__init__(server, error.message)
        self.error = error
        self.jsonrpc_code = error.code  # type: ignore[misc]
        self.data = error.data

    def __str__(self) -> str:
        return self.error.message


class ProbeFailed(UpstreamError):
    """`era = "auto"`'s `server/discover` probe ended without an answer: the connection closed (an
    old-SDK server crashes on the unknown method), the transport failed, or nothing came back.
    Not an era verdict, and the connection may be gone: the supervisor connects again with
    `initialize` alone. A JSON-RPC error the server answered is a verdict, and is raised as it came.
    """


class Session:
    """One upstream's session, shared by every client, and what the upstream said about itself.

    The `ClientSession` is made anew for each life of the upstream (see `Supervisor`); what it
    negotiated (protocol version, server info, capabilities) outlives it until the next one.
    """

    def __init__(
        self,
        name: str,
        *,
        max_concurrent: int,
        max_result_bytes: int,
        answers: Answers,
        on_message: MessageHandlerFnT,
        on_lost: Callable[[str], None],
        slots: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_result_bytes = max_result_bytes
        self._answers = answers
        self._on_message = on_message
        self._on_lost = on_lost
        """Told (with the reason) when the connection turns out to be closed: the upstream has failed."""
        self._slots = slots if slots is not None else anyio.CapacityLimiter(max_concurrent)
        """Shared with the upstream's handshake-era session (`upstream.companion`), if it has one."""
        self._last_answer = 0.0
        """When the upstream last answered a request (monotonic seconds): it was alive then."""
        self._closed_because = "connection closed"
        """What a request cut off by the connection closing is told (see `closing`)."""
        self.protocol_version: str | None = None
        self.era = "-"
        """`era_of(protocol_version)`, kept with it: read several times per forwarded call."""
        self.server_info: dict[str, Any] | None = None
        self.instructions: str | None = None
        self.capabilities: dict[str, Any] = {}
        self.invalid_tools: dict[str, str] = {}
        """Tools of the latest listing withheld for invalid `x-mcp-header` annotations, with the reason."""
        self.client: ClientSession | None = None
        """The live session while the upstream serves; the supervisor sets it once the lists are in."""
        self.tasks: anyio.abc.TaskGroup | None = None
        """The task group of the upstream's latest life: re-lists and watch streams run in it."""
        self._wire: LeanWire | HttpWire | None = None
        """The lean request path of the latest life (stdio: `upstream.wire`), for `LEAN_METHODS`."""

    @property
    def slots(self) -> tuple[int, int]:
        """Calls holding a slot, and calls waiting for one (read by metrics when scraped)."""
        return int(self._slots.borrowed_tokens), self._slots.statistics().tasks_waiting

    async def connect(
        self,
        stack: AsyncExitStack,
        streams: tuple[Any, Any],
        *,
        era: Era,
        wire: LeanWire | HttpWire | None = None,
    ) -> ClientSession:
        """A new `ClientSession` over `streams`, entered on `stack`, with its era negotiated.

        `wire`: the lean request path on the same connection (stdio), for the common requests.
        """
        self._closed_because = "connection closed"  # a new life: an earlier one's reason is over
        self._wire = None
        read, write = streams
        answers = self._answers
        session = ClientSession(
            read,
            write,
            message_handler=self._on_message,
            list_roots_callback=answers.list_roots_callback,
            client_info=types.Implementation(name="mcpgw", version=version()),
            sampling_callback=answers.sampling_callback,
            elicitation_callback=answers.elicitation_callback,
            sampling_capabilities=answers.sampling_capabilities,
            extensions=answers.extensions,
        )
        _compat.skip_tool_result_validation(session)
        _compat.complete_without_result_type(session)
        session = await stack.enter_async_context(session)
        if era == "handshake":
            await session.initialize()
        elif era == "stateless":
            await session.discover()
        else:
            await self._negotiate(session)
        _compat.keep_request_capabilities(session)
        self.protocol_version = session.protocol_version
        self.era = era_of(self.protocol_version)
        info = session.server_info
        self.server_info = info.model_dump(by_alias=True, exclude_none=True) if info else None
        self.instructions = session.instructions
        caps = session.server_capabilities
        self.capabilities = caps.model_dump(by_alias=True, exclude_none=True) if caps else {}
        # Over HTTP only a 2026-07-28 upstream: a handshake-era one's requests belong to its session.
        self._wire = wire if isinstance(wire, LeanWire) or self.era == "stateless" else None
        if isinstance(wire, LeanWire):

            async def log_line(method: str, params: dict[str, Any] | None) -> None:
                await _compat.deliver_notification(session, method, params)

            wire.on_log = log_line
            wire.stamp_of = lambda method: stamp_of(session, method)
        return session

    async def _negotiate(self, session: ClientSession) -> None:
        """The SDK's `auto` policy (probe, then `initialize` on the same connection when the probe is
        answered with an error or not at all within the SDK's probe timeout); `ProbeFailed` when it
        failed for any reason but an answer."""
        try:
            await _compat.negotiate_auto(session)
        except MCPError as exc:
            lost = exc.code in (types.CONNECTION_CLOSED, types.REQUEST_TIMEOUT) or _compat.connection_closed(
                session
            )
            if not lost:
                raise  # the server answered: a verdict (a modern-only server we share no version with)
            raise ProbeFailed(self.name, describe(exc)) from exc
        except Exception as exc:
            # The SDK lets transport errors through ("an outage is never an era verdict"); a fresh
            # connection with `initialize` either works or fails with the outage's own error.
            raise ProbeFailed(self.name, describe(exc)) from exc

    @property
    def in_flight(self) -> int:
        """Requests holding a call slot now."""
        return int(self._slots.borrowed_tokens)

    def closing(self, reason: str) -> None:
        """The connection is about to be closed on purpose: requests it cuts off say `reason`."""
        self._closed_because = reason

    def busy(self, *, within: float) -> bool:
        """Calls in flight, or an answer in the last `within` seconds: a busy upstream, not a hung one."""
        return self._slots.borrowed_tokens > 0 or time.monotonic() - self._last_answer < within

    async def request(
        self,
        client: ClientSession,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float,
        on_progress: ProgressRelay | None = None,
    ) -> dict[str, Any]:
        """Send one request in one of the upstream's call slots and return the raw result dict."""
        slots = self._slots
        if slots.available_tokens == 0:
            return await self._queued(slots, client, method, params, timeout, on_progress)
        # Taken without `async with`: anyio's acquire yields to the event loop even when a slot is free,
        # one loop turn per call for nothing. Held for a token of its own, not the task: `acquire_nowait`
        # and `release` each look the current task up (about 2% of a lean call's CPU, py-spy).
        borrower = object()
        slots.acquire_on_behalf_of_nowait(borrower)
        try:
            return await self.send(client, method, params, timeout=timeout, on_progress=on_progress)
        finally:
            slots.release_on_behalf_of(borrower)

    async def _queued(
        self,
        slots: anyio.CapacityLimiter,
        client: ClientSession,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        on_progress: ProgressRelay | None,
    ) -> dict[str, Any]:
        """Wait for a free call slot within the call's own timeout, then send with what time is left."""
        began = anyio.current_time()
        with anyio.move_on_after(timeout) as waiting:
            await slots.acquire()
        if waiting.cancelled_caught:  # never got a slot (one got at the deadline is held, and used)
            raise UpstreamTimeout(
                self.name,
                f"{method} waited {timeout:g}s for one of its {self.max_concurrent} call slots "
                "(max_concurrent) and was not sent",
            )
        try:
            left = max(timeout - (anyio.current_time() - began), 0.001)
            return await self.send(client, method, params, timeout=left, on_progress=on_progress)
        finally:
            slots.release()

    async def send(
        self,
        client: ClientSession,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float,
        on_progress: ProgressRelay | None = None,
    ) -> dict[str, Any]:
        """Send one request outside the call slots: the boundary where the mcp client's errors are ours."""
        wire, size = self._wire, UNSIZED
        if wire is not None and method in LEAN_METHODS and not wire.closed and not tracing.on():
            # Tracing on, the SDK's path: its `MCP send` span carries the trace context upstream.
            result, size = await self._lean(client, wire, method, params or {}, timeout, on_progress)
        else:
            result = await self._via_sdk(client, method, params, timeout, on_progress)
        self._last_answer = time.monotonic()
        if (  # a line shorter than the limit (with room for a `resultType` added) needs no walk
            method not in ("ping", "server/discover")
            and size + 32 > self.max_result_bytes
            and _content_size(result, self.max_result_bytes) > self.max_result_bytes
        ):
            raise UpstreamError(
                self.name,
                f"{method} returned more than {self.max_result_bytes} characters "
                "([gateway] max_result_bytes); the result was dropped",
            )
        meta = result.get("_meta")
        if isinstance(meta, dict) and any(map(_reserved, meta)):
            # The upstream's own protocol stamps (its serverInfo) describe the upstream hop;
            # the client is talking to mcpgw, which stamps its own.
            kept = {k: v for k, v in meta.items() if not k.startswith(_RESERVED_META_PREFIX)}
            if kept:
                result["_meta"] = kept
            else:
                del result["_meta"]
        return result

    async def _lean(
        self,
        client: ClientSession,
        wire: LeanWire | HttpWire,
        method: str,
        params: dict[str, Any],
        timeout: float,
        on_progress: ProgressRelay | None,
    ) -> tuple[dict[str, Any], int]:
        """One request on the lean path (`upstream.wire`): stamped, checked and answered as the SDK's
        session would, without its models, memory streams and writer task; and its line's size."""
        try:
            if isinstance(wire, LeanWire):  # it stamps the request itself (`wire.stamp_of`): no headers
                answer, size = await wire.request(method, params, timeout=timeout, on_progress=on_progress)
            else:
                meta = params.get("_meta")
                data: dict[str, Any] = {"method": method, "params": {**params}}
                if isinstance(meta, dict):
                    data["params"]["_meta"] = {**meta}  # the stamp writes into it: the caller's stays
                headers = _compat.stamp_request(client, data)

                async def notified(name: str, params: dict[str, Any] | None) -> None:
                    await _compat.deliver_notification(client, name, params)

                answer, size = await wire.request(
                    method,
                    data["params"],
                    headers=headers,
                    timeout=timeout,
                    on_progress=on_progress,
                    on_notify=notified,
                )
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            # The upstream is not there (refused, reset, cut off): failed, as the SDK's transport
            # would have ended its session, so the supervisor reconnects and errors say "down".
            self._on_lost(describe(exc))
            raise UpstreamUnavailable(self.name, describe(exc)) from exc
        except httpx2.HTTPError as exc:
            raise UpstreamUnavailable(self.name, describe(exc)) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(self.name, f"{method} timed out after {timeout:g}s") from exc
        except WireClosed as exc:
            self._on_lost("connection closed")
            raise UpstreamUnavailable(self.name, self._closed_because) from exc
        result = answer.get("result")
        try:
            if "error" in answer and result is None:
                self._last_answer = time.monotonic()
                raise UpstreamReplyError(self.name, types.ErrorData.model_validate(answer["error"]))
            if not isinstance(result, dict):
                raise UpstreamError(self.name, f"sent an invalid {method} result: not an object")
            return _compat.checked_result(client, method, result), size
        except ValidationError as exc:
            raise UpstreamError(
                self.name, f"sent an invalid {method} result: {exc.error_count()} problems"
            ) from exc

    async def _via_sdk(
        self,
        client: ClientSession,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        on_progress: ProgressRelay | None,
    ) -> dict[str, Any]:
        """One request through the SDK's session: the mcp client's errors become ours here."""
        request: types.Request[Any, Any] = types.Request[dict[str, Any], str](
            method=method, params=params or {}
        )
        # The loop's own clock, as the SDK's timer reads it: uvloop's has millisecond steps, so by
        # `time.monotonic` its timer may fire a hair before `timeout` has passed.
        sent = anyio.current_time()
        try:
            result: dict[str, Any] = await client.send_request(  # type: ignore[type-var]
                request,
                _RAW,
                request_read_timeout_seconds=timeout,
                progress_callback=cast(ProgressFnT, on_progress),
            )
            if method == "tools/list":
                result = self._absorbed(client, params, result)
        except MCPError as exc:
            # The SDK raises its own timeout and connection loss with the same codes an upstream may
            # put in an error reply, so the codes alone decide nothing: a hostile upstream answering
            # -32000 would otherwise get itself restarted, failing every other client's calls.
            if exc.code == types.REQUEST_TIMEOUT and anyio.current_time() - sent >= timeout - TIMER_STEP:
                raise UpstreamTimeout(self.name, f"{method} timed out after {timeout:g}s") from exc
            if exc.code == types.CONNECTION_CLOSED and _compat.connection_closed(client):
                self._on_lost("connection closed")
                raise UpstreamUnavailable(self.name, self._closed_because) from exc
            self._last_answer = time.monotonic()
            raise UpstreamReplyError(self.name, exc.error) from exc
        except ValidationError as exc:
            raise UpstreamError(
                self.name, f"sent an invalid {method} result: {exc.error_count()} problems"
            ) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            self._on_lost("connection closed")
            raise UpstreamUnavailable(self.name, self._closed_because) from exc
        return result

    def _absorbed(
        self, client: ClientSession, params: dict[str, Any] | None, page: dict[str, Any]
    ) -> dict[str, Any]:
        """A 2026-07-28 `tools/list` page as the SDK's own `list_tools` leaves it: what it keeps, and learnt.

        The session learns each tool's `x-mcp-header` map, so calls to it carry their `Mcp-Param-*`
        headers; a tool whose annotations are invalid is withheld, as the spec tells clients to,
        since no call to it could carry valid headers. (A tool the SDK's types refuse has already
        failed the SDK's check of the result's shape for the negotiated revision.)
        """
        raw = page.get("tools")
        if self.era != "stateless" or not isinstance(raw, list):
            return page
        typed = [types.Tool.model_validate(tool) for tool in raw]
        complete = not (params or {}).get("cursor") and not page.get("nextCursor")
        kept = _compat.absorb_tool_listing(client, typed, complete=complete)
        if not (params or {}).get("cursor"):
            self.invalid_tools = {}
        withheld = [t for t in raw if t.get("name") not in kept]
        for tool in withheld:
            reason = find_invalid_x_mcp_header(tool.get("inputSchema")) or "refused by the mcp client"
            self.invalid_tools[str(tool.get("name"))] = reason
        if withheld:
            dropped = {id(t) for t in withheld}
            page = {**page, "tools": [t for t in raw if id(t) not in dropped]}
        return page


def _content_size(result: dict[str, Any], limit: int) -> int:
    """Characters of text a result carries anywhere (content, structuredContent, `_meta`, keys too):
    never more than the bytes of the JSON line it came in, so `send` skips it for a short line.

    Every part counts: a limit on `content` alone let 40 MB through in `structuredContent`. The walk
    stops as soon as the count passes `limit`, so an oversized result costs no more than the limit.
    """
    size = 0
    stack: list[Any] = [result]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                size += len(key)
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
        if size > limit:
            break
    return size


def describe(exc: BaseException) -> str:
    """A one-line reason for a failure, looking through exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return exc.error.message
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
