"""What mcpgw tells its clients besides results: list changes, progress, upstream log lines.

Owns: announcing catalog changes to handshake-era connections
(`notifications/*/list_changed`, the capabilities advertised for them) and to
2026-07-28 listeners (`subscriptions/listen`), relaying an upstream's progress
to the request that asked, and relaying an upstream's log lines to the request
they belong to, at the level its client set.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

import mcp_types as types
from mcp import MCPDeprecationWarning
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcpgw import _compat
from mcpgw.upstream.logrelay import LogLevels, LogSink

Ctx = ServerRequestContext[Any, Any]

# The SDK marks `send_log_message` deprecated as of 2026-07-28 (SEP-2577) and warns where it is called.
# The warning is for authors of new servers. mcpgw relays an upstream's log lines on purpose, to the
# clients that asked for them (handshake-era ones, and 2026-07-28 requests that opt in). Left alone,
# the warning would appear once, with this file's path, in the gateway's own log. It is silenced for
# calls made from this module only: the filter matches the caller's module name.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=re.escape(__name__))


class Announcer:
    """Tells connected clients that lists changed, in each client's era."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.track = _Tracker(self._connections)
        """Server middleware: remember handshake-era connections, which get standalone notifications."""

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


class _Tracker:
    """`Announcer.track`: each handshake-era connection a request comes on is remembered."""

    lean_methods: frozenset[str] = frozenset()
    """Nothing to do on a forwarded request a lane runs the chain for (`fastlane.Chains`): the stdio
    lane's connection was remembered on the request that told it the era, and the stateless HTTP
    path's requests are all 2026-07-28 ones."""

    def __init__(self, connections: weakref.WeakSet[Connection]) -> None:
        self._connections = connections

    async def __call__(self, ctx: Ctx, call_next: Callable[[Ctx], Awaitable[Any]]) -> Any:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            connection = _compat.session_connection(ctx.session)
            if connection is not None:
                self._connections.add(connection)
        return await call_next(ctx)


def notification_options() -> NotificationOptions:
    """The `listChanged` capabilities the server advertises: every list may change (`Announcer`)."""
    return NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


def progress_relay(ctx: Ctx) -> Callable[[float, float | None, str | None], Awaitable[None]] | None:
    """Where an upstream's progress for this call goes: to the client that asked for it; None if none did.

    A client over JSON-RPC asks with a progress token; one dispatched in-process (an embedder's
    `Client(server)`) with a callback. The session's `report_progress` serves both, on the request's
    own channel.
    """
    meta = (ctx.params or {}).get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    if token is None and not _compat.direct_progress_requested(ctx.session):
        return None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.report_progress(progress, total, message)

    return relay


def log_sink(ctx: Ctx, levels: LogLevels) -> LogSink:
    """Where an upstream's log lines for this call go: this call's own stream, at the client's level."""
    connection = _compat.session_connection(ctx.session)

    async def sink(level: str, data: Any, name: str | None) -> None:
        if connection is not None and not levels.wants(connection, level):
            return
        # The SDK itself drops what a 2026-07-28 request did not opt in to (its `_meta` log level).
        await ctx.session.send_log_message(
            cast(types.LoggingLevel, level), data, logger=name, related_request_id=ctx.request_id
        )

    return sink
