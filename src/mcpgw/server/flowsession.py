"""Which agent session a request belongs to, for the flow policies and `mcpgw logs --session`.

Owns: `session_of`, the one place a request's session is decided:

- a handshake-era client (2025-06-18, 2025-11-25): its MCP session (over HTTP the
  `Mcp-Session-Id` the client holds; over stdio or in memory, its connection);
- a 2026-07-28 client, which has no MCP session: the session or conversation id its request
  names in `_meta` (`mcpgw/session`, `sessionId` or `conversationId`) or in the
  `Mcpgw-Session` header, kept apart per client (its `[auth]` principal, else its address),
  so one client cannot name its way into another's session;
- else that client's calls within `[security.flows] session_window` of each other.

A client holds at most `max_sessions_per_client` named sessions (its least recently used goes
first), so naming many cannot push other clients' state out; handshake-era HTTP sessions are
bounded per client by the session manager already (`server.sessions`).

A client that names a new session for every call leaves each of them fresh: the named id is
for honest agent hosts (the threat is a model steered by what it read, not the host).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcpgw import _compat
from mcpgw.security.flows import SessionRef

META_KEYS = ("mcpgw/session", "sessionId", "conversationId")
HEADER = "mcpgw-session"
_STATE_KEY = "mcpgw.flow-session"
"""Connection state key: a handshake-era connection's session where no header names it."""
_MAX_ID = 200
_LOCAL = SessionRef(key="client:local")
"""The session of a 2026-07-28 client over stdio (or in memory) that names none: one serves all (frozen)."""


def session_of(ctx: Any, *, principal: str | None = None) -> SessionRef | None:
    """The agent session of the request `ctx` serves (see the module docstring). `principal`: the
    request's `[auth]` principal when the caller has it (who the client is, without a second look)."""
    request = ctx.request
    headers = getattr(request, "headers", None)
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        held = headers.get("mcp-session-id") if headers is not None else None
        if held:
            return SessionRef(key=f"mcp:{held}", id=held[:_MAX_ID])
        connection = _compat.session_connection(ctx.session)
        if connection is None:
            return None
        ref: SessionRef | None = connection.state.get(_STATE_KEY)
        if ref is None:
            own = uuid.uuid4().hex
            ref = connection.state[_STATE_KEY] = SessionRef(key=f"mcp:{own}", id=own)
        return ref  # made once a connection (it is frozen)
    scope = getattr(request, "scope", None)
    who = "local"
    if isinstance(scope, dict):
        who = principal or (_client_of or _http_client_of())(scope)
    named = _named(ctx.params, headers)
    if named is not None:
        return SessionRef(key=f"named:{who}\x00{named}", id=named, client=who)
    return _LOCAL if who == "local" else SessionRef(key=f"client:{who}")


_client_of: Callable[[Any], str] | None = None


def _http_client_of() -> Callable[[Any], str]:
    """`server.sessions.client_of`, imported once, on the first HTTP request: the HTTP side (auth) is
    only loaded over HTTP, and an import statement run on every request costs about a microsecond."""
    global _client_of
    from mcpgw.server.sessions import client_of

    _client_of = client_of
    return client_of


def _named(params: Any, headers: Any) -> str | None:
    meta = (params or {}).get("_meta")
    if isinstance(meta, dict):
        for key in META_KEYS:
            value = meta.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:_MAX_ID]
    value = headers.get(HEADER) if headers is not None else None
    return value.strip()[:_MAX_ID] if value and value.strip() else None
