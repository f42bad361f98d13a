"""The lean server side of the forwarded requests: a call's params checked once, its result not re-checked.

Owns: `LeanCalls`, the server middleware that serves `tools/call`, `resources/read` and `prompts/get`
without the mcp SDK runner's second look at them, and `answered_by`, which the forwarding handlers
call to say in which protocol version the result they return was checked.

For each request the SDK's runner checks the params against the client's version's schema, then
validates them again into the handler's params model (which mcpgw's handlers do not read: they
forward the raw params), and after the handler it validates the result against the client's
version's schema and dumps it again (`_serialize`). The upstream session already checked that
result against the upstream's version (`upstream.session`); when the client speaks the same
version, that second check finds what the first found, at the cost of a full model round trip per
call. So here: the params are checked once (the SDK's own check, with its errors), and the result
is re-shaped only when the client's version differs from the one it was checked in (era
translation: the SDK's per-version shaping, exactly as the runner does it). What the runner adds to
every result (cache hints, `resultType`, the `serverInfo` stamp) is added here the same way.

A request the SDK would refuse before its handler (a handshake-era connection not yet initialized)
goes down the SDK's path, which refuses it with its own error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from mcp.server.context import CallNext, ServerMiddleware, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CORE_RESULT_TYPES,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    SERVER_INFO_META_KEY,
    ErrorData,
)
from mcp_types import methods as spec
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from mcpgw import _compat, shapes
from mcpgw.observe import context as observe

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway

logger = logging.getLogger("mcpgw.server")

Ctx = ServerRequestContext[Any, Any]
METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})

_checked_in: ContextVar[list[str | None] | None] = ContextVar("mcpgw_checked_in", default=None)


def answered_by(gateway: Gateway) -> None:
    """Say, for `LeanCalls`, which protocol version the result the current handler returns was checked
    in: its upstream's (the upstream session checks every result); none when no upstream answered."""
    slot = _checked_in.get()
    if slot is not None:
        server = observe.current().server
        upstream = gateway.upstreams.get(server) if server is not None else None
        slot[0] = upstream.protocol_version if upstream is not None else None


class LeanCalls:
    """Server middleware: the forwarded requests, checked once (see the module docstring)."""

    def __init__(self, server: Server[Any]) -> None:
        self._server = server
        # The SDK deep-copies its stamp on every access (so a caller may mutate it); a forwarded
        # result is dumped as soon as it is shaped and never mutated, so one copy serves every call.
        self._stamp = server.server_info_stamp

    async def __call__(self, ctx: Ctx, call_next: Callable[[Ctx], Awaitable[Any]]) -> Any:
        method = ctx.method
        entry = self._server.get_request_handler(method) if method in METHODS else None
        connection = _compat.session_connection(ctx.session)
        if entry is None or connection is None or not connection.initialize_accepted:
            return await call_next(ctx)
        version = ctx.protocol_version
        try:
            shapes.validate_client_request(method, version, ctx.params)
        except KeyError:
            return await call_next(ctx)  # not a method of this version: the SDK's own refusal
        return await self._forwarded(ctx, entry.handler, method, version)

    async def _forwarded(self, ctx: Ctx, handler: Any, method: str, version: str) -> dict[str, Any]:
        """A forwarded request's handler run (its params checked already), its result shaped."""
        slot: list[str | None] = [None]
        token = _checked_in.set(slot)
        try:
            result = cast(dict[str, Any], await handler(ctx, None))
        finally:
            _checked_in.reset(token)
        return self._shaped(method, version, result, checked_in=slot[0])

    async def handle(self, ctx: Ctx) -> dict[str, Any]:
        """The end of a lane's middleware chain (the stdio lane's, the stateless HTTP path's), as the
        SDK runner's: params checked, the init gate, the handler, the result shaped. The forwarded
        requests as this middleware serves them (`Chains` leaves it out of their chains)."""
        method, params, version = ctx.method, ctx.params, ctx.protocol_version
        if method in spec.SPEC_CLIENT_METHODS:
            try:
                shapes.validate_client_request(method, version, params)
            except KeyError:
                raise MCPError(code=METHOD_NOT_FOUND, message="Method not found", data=method) from None
        entry = self._server.get_request_handler(method)
        if entry is None:
            raise MCPError(code=METHOD_NOT_FOUND, message="Method not found", data=method)
        connection = _compat.session_connection(ctx.session)
        if connection is None or not connection.initialize_accepted:
            raise MCPError(code=INVALID_PARAMS, message="Invalid request parameters", data="")
        if method in METHODS:  # their handlers read the raw params: no typed copy of them
            return await self._forwarded(ctx, entry.handler, method, version)
        typed = entry.params_type.model_validate({} if params is None else params, by_name=False)
        result = await entry.handler(ctx, typed)
        if isinstance(result, ErrorData):
            raise MCPError.from_error_data(result)
        return self.shaped(method, version, dumped(result))

    def shaped(self, method: str, version: str, result: dict[str, Any]) -> dict[str, Any]:
        """`result` as the SDK runner's `_serialize` leaves it, checked against `version`'s schema."""
        return self._shaped(method, version, result, checked_in=None)

    def _shaped(
        self, method: str, version: str, result: dict[str, Any], *, checked_in: str | None
    ) -> dict[str, Any]:
        """The result as the SDK runner's `_serialize` leaves it; the schema check only across versions."""
        input_required = spec.is_input_required(result)
        hint = self._server.cache_hints.get(cast(Any, method))
        # Cache hints are 2026-07-28 fields: the runner adds them for every client and its per-version
        # shaping takes them out again for an older one, which is not shaped here when versions match.
        if hint is not None and not input_required and version in MODERN_PROTOCOL_VERSIONS:
            result = {"ttlMs": hint.ttl_ms, "cacheScope": hint.scope, **result}
        else:
            result = dict(result)
        result_type = result.get("resultType")
        core = (
            version not in MODERN_PROTOCOL_VERSIONS
            or not isinstance(result_type, str)
            or result_type in CORE_RESULT_TYPES
        )
        if core and checked_in != version:
            try:
                result = spec.serialize_server_result(method, version, result)
            except ValidationError:
                logger.exception("handler for %r returned an invalid result", method)
                raise MCPError(code=INTERNAL_ERROR, message="Handler returned an invalid result") from None
        if version in MODERN_PROTOCOL_VERSIONS:
            if result.get("resultType") is None:
                result["resultType"] = "complete"
            meta = result.get("_meta")
            if meta is None:
                result["_meta"] = {SERVER_INFO_META_KEY: self._stamp}
            elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
                result["_meta"] = {**meta, SERVER_INFO_META_KEY: self._stamp}
        return result


class Chains:
    """The server's middleware chain around `calls.handle` for each method, made once per method
    (again when the server's middleware changes), for the lanes that run chains themselves (the stdio
    lane, the stateless HTTP path). A middleware whose `lean_methods` (the forwarded requests it acts
    on) leaves a method out has nothing to do on it and is not in its chain; `skip`: middleware left
    out of all. The `LeanCalls` middleware is left out too (`handle` serves the forwarded requests as
    it does), and with it, on those, whatever follows it (which it reaches only on the way to a
    refusal `handle` gives the same)."""

    def __init__(self, server: Server[Any], calls: LeanCalls, *, skip: tuple[Any, ...] = ()) -> None:
        self._server, self._end, self._skip = server, calls.handle, skip
        self._chains: tuple[tuple[Any, ...], dict[str, CallNext]] = ((), {})

    def __call__(self, method: str) -> CallNext:
        middlewares, chains = self._chains
        if middlewares != (current := tuple(self._server.middleware)):
            middlewares, chains = self._chains = (current, {})
        call = chains.get(method)
        if call is None:
            call = self._end
            for middleware in reversed(middlewares):
                if middleware in self._skip:
                    continue
                if isinstance(middleware, LeanCalls):
                    if method in METHODS:  # served here, as `end` serves it: what follows never runs
                        call = self._end
                    continue  # on any other method it only hands on
                acts_on = getattr(middleware, "lean_methods", None)
                if acts_on is None or method in acts_on:
                    call = partial(apply, middleware, call)
            chains[method] = call
        return call


def apply(middleware: ServerMiddleware[Any], call_next: CallNext, ctx: Ctx) -> Awaitable[Any]:
    return middleware(ctx, call_next)  # as the SDK's runner calls a middleware


def dumped(result: Any) -> dict[str, Any]:
    """A chain's answer as the SDK runner's `_dump_result` makes it a dict; a plain dict is itself, not
    a copy: the lanes only read and dump it from here (`shaped` makes its own)."""
    if result is None:
        return {}
    if isinstance(result, ErrorData):
        raise MCPError.from_error_data(result)
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    if type(result) is dict:
        return result
    if isinstance(result, dict):
        return dict(result)
    raise TypeError(f"handler returned {type(result).__name__}; expected BaseModel, dict, or None")
