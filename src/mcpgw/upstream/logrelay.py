"""Upstream log messages relayed to the client whose call produced them, at the level it asked for.

Owns: the log level each downstream connection set with `logging/setLevel`,
and delivering an upstream's `notifications/message` to the call it belongs to
(on that call's own stream).

An upstream session is shared by every client, and a log notification names no
request, so a line is relayed only while exactly one call is in flight on that
upstream (`inflight`, the registry sampling attribution reads too): then it can
only be that call's. With several calls in flight, or
none, the line goes to the gateway's own log instead, never to a client that
might not be its owner (clients of different personas share upstreams).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from mcpgw.upstream.inflight import InFlight
from mcpgw.upstream.inflight import LogSink as LogSink

logger = logging.getLogger("mcpgw.logrelay")

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


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
    """The relay of each upstream's log lines to the call in flight on it (`inflight.InFlight.log_owner`)."""

    def __init__(self, inflight: InFlight) -> None:
        self.inflight = inflight

    async def deliver(self, upstream: str, params: dict[str, Any]) -> None:
        level = str(params.get("level", "info"))
        data = params.get("data")
        name = params.get("logger")
        owner = self.inflight.log_owner(upstream)
        if owner is None or owner.on_log is None:
            logger.debug(
                "upstream %s log (%s, not relayed: %d calls in flight): %s",
                upstream,
                level,
                self.inflight.count(upstream),
                data,
            )
            return
        await owner.on_log(level, data, str(name) if name is not None else None)
