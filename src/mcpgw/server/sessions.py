"""Bounds on the handshake-era HTTP sessions: per client and in all, idle ones closed to make room.

Owns: `SessionLimits`, the ASGI app in front of the SDK's session manager that
admits each new session (a request without `Mcp-Session-Id`). A 2025-11-25
session costs the gateway a server task, streams and buffers until its client
deletes it or it has been idle for `[gateway] session_idle_timeout`; without
bounds, one client opening sessions in a loop fills memory and, at the SDK's
own cap, refuses every other client's `initialize` with 503 for as long as the
idle timeout. Here a client is its token's principal under `[auth]`, else its
address, and before a session is admitted:

- a client at `max_sessions_per_client` gives up its own least recently used
  idle session;
- at `max_sessions` in all, the client gives up its own least recently used idle
  session if it has one, else the client holding the most sessions gives up its
  least recently used idle one (so a client with many gives way before one with
  few).

A session is idle while no request of it is in flight (an open GET stream is
one). Only when every session that could give way is busy is the new one
refused (503, `Retry-After`): never because of another client's idle sessions.
A closed session's id answers 404, and its client starts a new session, as the
spec has it. 2026-07-28 requests are stateless and pass straight through.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mcpgw import _compat
from mcpgw.server.auth import principal
from mcpgw.server.edge import jsonrpc_error

if TYPE_CHECKING:
    from mcp.server.streamable_http import StreamableHTTPServerTransport
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

logger = logging.getLogger("mcpgw.sessions")

_SESSION_HEADER = MCP_SESSION_ID_HEADER.encode()
_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.encode()
RETRY_AFTER_SECONDS = 5
"""What a refused client is told to wait: sessions in use end when their requests do."""


@dataclass(eq=False, slots=True)
class _Session:
    id: str
    client: str
    transport: StreamableHTTPServerTransport
    in_flight: int = 1
    """Requests of this session being served; born with the one that opened it."""

    @property
    def idle(self) -> bool:
        return self.in_flight == 0


class SessionLimits:
    """ASGI app: the SDK's session manager behind an admission check for new sessions."""

    def __init__(
        self,
        app: Any,
        manager: StreamableHTTPSessionManager,
        *,
        max_sessions: int,
        per_client: int,
    ) -> None:
        self.app = app
        self.manager = manager
        self.max_sessions = max_sessions
        self.per_client = min(per_client, max_sessions)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        """Every admitted session, least recently used first."""
        self._held: Counter[str] = Counter()
        """Sessions per client: admitted ones, and ones being opened (they cannot give way yet)."""
        self._opening = 0

    @property
    def open(self) -> int:
        """Sessions admitted and being opened now."""
        return len(self._sessions) + self._opening

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _stateful(scope):
            await self.app(scope, receive, send)
            return
        session_id = _header(scope, _SESSION_HEADER)
        if session_id is not None:
            await self._serve(session_id, scope, receive, send)
            return
        client = client_of(scope)
        evicted = self._admit(client)
        if evicted is None:
            logger.warning(
                "refused a new session for %s: %d sessions open (%d its own), none idle to close",
                client,
                self.open,
                self._held[client],
            )
            response = jsonrpc_error(
                503,
                types.INTERNAL_ERROR,
                "Too many sessions in use: end one (DELETE) or retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)
            return
        with anyio.CancelScope(shield=True):  # once forgotten, a session must end
            for session in evicted:
                await session.transport.terminate()
        await self._open(client, scope, receive, send)

    async def _serve(self, session_id: str, scope: Any, receive: Any, send: Any) -> None:
        session = self._sessions.get(session_id)
        if session is None:  # unknown or closed: the SDK answers 404
            await self.app(scope, receive, send)
            return
        session.in_flight += 1
        self._sessions.move_to_end(session_id)
        try:
            await self.app(scope, receive, send)
        finally:
            self._done(session)

    async def _open(self, client: str, scope: Any, receive: Any, send: Any) -> None:
        """Serve a request that opens a session (its room reserved by `_admit`)."""
        opened: _Session | None = None

        async def watch(message: Any) -> None:
            nonlocal opened
            if message["type"] == "http.response.start" and opened is None and message["status"] < 400:
                session_id = next(
                    (v.decode() for k, v in message.get("headers", ()) if k.lower() == _SESSION_HEADER),
                    None,
                )
                transport = (
                    None if session_id is None else _compat.session_transport(self.manager, session_id)
                )
                if session_id is not None and transport is not None:
                    self._opening -= 1
                    opened = _Session(session_id, client, transport)
                    self._sessions[session_id] = opened
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if opened is None:
                self._opening -= 1
                self._held[client] -= 1
                if not self._held[client]:
                    del self._held[client]
            else:
                self._done(opened)

    def _done(self, session: _Session) -> None:
        """A request of `session` has been answered: it was used last now (or it ended: a DELETE)."""
        session.in_flight -= 1
        if session.transport.is_terminated:
            self._forget(session)
        elif session.id in self._sessions:
            self._sessions.move_to_end(session.id)

    def _admit(self, client: str) -> list[_Session] | None:
        """Reserve room for a new session of `client`: the idle sessions that give way for it, or
        None if none can. Synchronous, so concurrent requests cannot take the same room."""
        evicted: list[_Session] = []
        if self._held[client] >= self.per_client or self.open >= self.max_sessions:
            for ended in [s for s in self._sessions.values() if s.transport.is_terminated]:
                self._forget(ended)
        if self._held[client] >= self.per_client or self.open >= self.max_sessions:
            victim = self._least_recently_used(client)
            if victim is None and self._held[client] < self.per_client:
                victim = self._least_recently_used(self._heaviest())
            if victim is None:
                return None
            logger.info(
                "closing idle session %s of %s to admit a new one for %s",
                victim.id[:8],
                victim.client,
                client,
            )
            self._forget(victim)
            evicted.append(victim)
        self._held[client] += 1
        self._opening += 1
        return evicted

    def _least_recently_used(self, client: str | None) -> _Session | None:
        if client is None:
            return None
        return next((s for s in self._sessions.values() if s.client == client and s.idle), None)

    def _heaviest(self) -> str | None:
        """The client holding the most sessions among those with an idle one (oldest first on a tie)."""
        counts: dict[str, int] = {}
        for session in self._sessions.values():
            if session.idle:
                counts.setdefault(session.client, self._held[session.client])
        return max(counts, key=lambda c: counts[c], default=None)

    def _forget(self, session: _Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        self._held[session.client] -= 1
        if not self._held[session.client]:
            del self._held[session.client]


def _stateful(scope: Any) -> bool:
    """Whether the SDK serves this request on a session, as its manager routes it by header."""
    version = _header(scope, _VERSION_HEADER)
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


def _header(scope: Any, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name), None)


def client_of(scope: Any) -> str:
    """Who a request comes from: its token's principal under `[auth]`, else its address."""
    who = principal(scope)
    if who is not None:
        return who
    peer = scope.get("client")
    return f"address {peer[0]}" if peer else "address unknown"
