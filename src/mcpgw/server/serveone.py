"""One 2026-07-28 request served through the server's middleware chain and handlers, as the mcp SDK's
`serve_one` serves it, with what `serve_one` makes per request made once.

Owns: `ServeOne`, which the lean stateless HTTP path (`server.stateless`) hands each call it takes:
the request's born-ready `Connection` (`born_ready`) and its result (`run`).

What `serve_one` (mcp 2.3) does per request and this does once or not at all (as the stdio lane,
`server.leanlane`, does): build a `ServerRunner` and compose the middleware chain (here: again only
when the server's middleware changes); validate `_meta` into a model for the context (here: the
envelope's `_meta` as it came, which the SDK's ladder has checked); turn the envelope's client info
and capabilities into models (here: once per distinct envelope, kept while clients send the same
one); and unwind the connection's exit stack under a shielded timer (here: only when something was
pushed on it). The chain, the params check and its errors, the handler and the result's shaping
are the same, and the chain's end is the stdio lane's own (`fastlane.LeanCalls.handle`).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.runner import aclose_shielded
from mcp.server.session import ServerSession

from mcpgw import _compat
from mcpgw.server.fastlane import Chains, LeanCalls, dumped

ENVELOPES = 8
"""Distinct client envelopes (version, client info, capabilities) whose typed models are kept."""

Ctx = ServerRequestContext[Any, Any]


class ServeOne:
    """2026-07-28 requests served through `server`'s middleware chain, as `serve_one` serves each."""

    def __init__(self, server: Server[Any], *, manager: Any) -> None:
        self._server = server
        self._manager = manager
        self._shaping = LeanCalls(server)
        self._chained = Chains(server, self._shaping)
        self._envelopes: list[tuple[tuple[str, Any, Any], Connection]] = []

    def born_ready(self, version: str, info: Any, capabilities: Any) -> Connection:
        """The request's connection, as `Connection.from_envelope` makes it, with the typed client
        info and capabilities of an earlier request that sent the same envelope."""
        key = (version, info, capabilities)
        template = next((known for seen, known in self._envelopes if seen == key), None)
        if template is None:
            template = Connection.from_envelope(version, info, capabilities)
            if len(self._envelopes) >= ENVELOPES:
                del self._envelopes[0]
            self._envelopes.append((key, template))
        return born_like(template, version, outbound=template.outbound)

    async def run(
        self,
        dctx: Any,
        method: str,
        params: dict[str, Any],
        meta: dict[str, Any],
        request: Any,
        connection: Connection,
    ) -> dict[str, Any]:
        """The request's result through the server's middleware chain, as the SDK's `serve_one` gives it."""
        ctx: Ctx = ServerRequestContext(
            session=ServerSession(dctx, connection, request_meta=meta),  # type: ignore[arg-type]
            lifespan_context=_compat.lifespan_state(self._manager),
            method=method,
            params=params,
            request_id=dctx.request_id,
            meta=meta,  # type: ignore[arg-type]
            protocol_version=connection.protocol_version,
            request=request,
        )
        try:
            return dumped(await self._chained(method)(ctx))
        finally:
            if not _compat.exit_stack_empty(connection.exit_stack):
                await aclose_shielded(connection)  # as the SDK's `serve_one` does per request


def born_like(template: Connection, version: str, *, outbound: Any) -> Connection:
    """A born-ready connection (as `Connection.from_envelope` makes one) with `template`'s typed client
    info and capabilities: the stdio lane's and this path's, per request.

    Made without `Connection.__init__` (mcp 2.3), which makes an `anyio.Event` per connection (the
    backend looked up through sniffio each time) only for it to be set at once: this one shares the
    template's, already set (an anyio event cannot be cleared, so a set one says the same to every
    connection). Every other field is the connection's own, as `__init__` gives it
    (`tests/test_serveone.py` checks that the two agree field for field)."""
    connection = Connection.__new__(Connection)
    connection.outbound = outbound
    connection.protocol_version = version
    connection.session_id = None
    connection.client_params = template.client_params
    connection.client_capabilities = template.client_capabilities
    connection.initialized = template.initialized
    connection.state = {}
    connection.exit_stack = AsyncExitStack()
    return connection
