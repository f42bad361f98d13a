"""Upstream log messages relayed to the client whose call produced them, at the level it asked for.

Owns: the log level each downstream connection set with `logging/setLevel`,
the calls in flight on each upstream, and delivering an upstream's
`notifications/message` to the call it belongs to (on that call's own stream).

An upstream session is shared by every client, and a log notification names no
request, so a line is relayed only while exactly one call is in flight on that
upstream: then it can only be that call's. With several calls in flight, or
none, the line goes to the gateway's own log instead, never to a client that
might not be its owner (clients of different personas share upstreams).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("mcpgw.logrelay")

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

LogSink = Callable[[str, Any, str | None], Awaitable[None]]
"""Sends one log line (level, data, logger name) to a downstream client."""


class LogLevels:
    """The minimum level each downstream connection asked for; connections that never asked get all."""

    def __init__(self) -> None:
        self._levels: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()

    def set(self, connection: object, level: str) -> None:
        self._levels[connection] = level

    def wants(self, connection: object, level: str) -> bool:
        wanted = self._levels.get(connection)
        if wanted is None or level not in LEVELS:
            return True
        return LEVELS.index(level) >= LEVELS.index(wanted)


class LogRelay:
    """Calls in flight per upstream, and the relay of that upstream's log lines to them."""

    def __init__(self) -> None:
        self._calls: dict[str, list[LogSink]] = {}

    @contextmanager
    def calling(self, upstream: str, sink: LogSink | None) -> Iterator[None]:
        """Count a call as in flight on `upstream` for the block (a call without a sink counts too)."""
        entry: LogSink = sink or _discard
        calls = self._calls.setdefault(upstream, [])
        calls.append(entry)
        try:
            yield
        finally:
            calls.remove(entry)

    async def deliver(self, upstream: str, params: dict[str, Any]) -> None:
        level = str(params.get("level", "info"))
        data = params.get("data")
        name = params.get("logger")
        calls = self._calls.get(upstream) or []
        if len(calls) != 1:
            logger.debug(
                "upstream %s log (%s, not relayed: %d calls in flight): %s", upstream, level, len(calls), data
            )
            return
        await calls[0](level, data, str(name) if name is not None else None)


async def _discard(level: str, data: Any, name: str | None) -> None:
    return None
