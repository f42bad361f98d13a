"""The downstream calls in flight on each upstream, and which of them an upstream's own messages belong to.

Owns: the one registry of calls in flight per upstream (each a `Caller`: its
persona, the client channel behind it, its log sink), entered once per upstream
request by the gateway, and the two attribution rules that read it.

An upstream session is shared by every client, and neither a log notification
nor (over stdio) a sampling request names the downstream call it belongs to, so
both are attributed to the calls in flight on that upstream:
- a `notifications/message` line goes to the one call in flight, and to nobody
  when there are several or none (`log_owner`);
- a sampling or elicitation request is refused when calls of several personas
  are in flight (it would be charged to the wrong one), charged to the persona
  but relayed to no client when several calls of one persona are in flight,
  and belongs to the call when it is the only one (`requester`).
Both rules read the same entries, so a call counts for one exactly when it
counts for the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mcpgw.errors import SamplingRefused

LogSink = Callable[[str, Any, str | None], Awaitable[None]]
"""Sends one log line (level, data, logger name) to a downstream client."""

Send = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ClientChannel:
    """What mcpgw can ask of the downstream client behind one call."""

    can_sample: bool = False
    can_elicit: bool = False
    apps: bool = False
    """It renders MCP Apps: it declared the `io.modelcontextprotocol/ui` extension with its MIME type."""
    elicits_urls: bool = False
    """It declared URL-mode elicitation (2025-11-25): a login link can reach it as one."""
    modern: bool = False
    """A 2026-07-28 client: it answers `input_required` results, not server-to-client requests."""
    send: Send | None = None
    """Sends a server-to-client request on the call's channel (handshake-era clients only)."""
    principal: str | None = None
    """Who the client is over HTTP with `[auth]` (`auth.principal`): the `requestState` it is
    handed is bound to it (`bridge.state`). None on stdio and without `[auth]`."""


class Caller:
    """One downstream call in flight on an upstream (its own key among the calls in flight).

    A plain class with slots, made once per forwarded call: a frozen dataclass took 3.8 us to build.
    """

    __slots__ = ("client", "on_log", "persona", "request_id", "trace")

    def __init__(
        self,
        persona: str | None,
        *,
        client: ClientChannel | None = None,
        request_id: str | None = None,
        on_log: LogSink | None = None,
        trace: object | None = None,
    ) -> None:
        self.persona = persona
        self.client = client
        self.request_id = request_id
        """The audit id of the downstream request: its sampling rows carry the same id."""
        self.on_log = on_log
        """Where the upstream's log lines go while this is its only call (None: the gateway's own log)."""
        self.trace = trace
        """The downstream call's trace context (tracing on): its sampling spans join its trace."""

    def __repr__(self) -> str:
        return f"Caller(persona={self.persona!r}, request_id={self.request_id!r})"


class InFlight:
    """Calls in flight per upstream name."""

    def __init__(self) -> None:
        self._calls: dict[str, dict[int, Caller]] = {}

    @contextmanager
    def calling(self, upstream: str, caller: Caller) -> Iterator[None]:
        """Count `caller` as in flight on `upstream` for the block."""
        self.add(upstream, caller)
        try:
            yield
        finally:
            self.discard(upstream, caller)

    def add(self, upstream: str, caller: Caller) -> None:
        """`calling` without its generator (the forward path): pair it with `discard` in a `finally`."""
        calls = self._calls.get(upstream)
        if calls is None:
            calls = self._calls[upstream] = {}
        calls[id(caller)] = caller

    def discard(self, upstream: str, caller: Caller) -> None:
        calls = self._calls.get(upstream)
        if calls is not None:
            calls.pop(id(caller), None)

    def count(self, upstream: str) -> int:
        return len(self._calls.get(upstream) or {})

    def log_owner(self, upstream: str) -> Caller | None:
        """The call an upstream's log line belongs to: the only one in flight, else none."""
        calls = list((self._calls.get(upstream) or {}).values())
        return calls[0] if len(calls) == 1 else None

    def requester(self, upstream: str) -> Caller:
        """The call an upstream's sampling or elicitation request is charged to (see the module doc)."""
        callers = list((self._calls.get(upstream) or {}).values())
        if not callers:
            return Caller(persona=None)
        personas = {c.persona for c in callers}
        if len(personas) > 1:
            raise SamplingRefused(
                f"upstream '{upstream}' asked for sampling while calls from several personas were in flight; "
                "mcpgw cannot tell whose call it belongs to, so it refuses rather than charge the wrong one"
            )
        if len(callers) > 1:
            # Which of the calls (and so which client) asked is unknown: charge the persona, relay to nobody.
            return Caller(persona=callers[0].persona)
        return callers[0]
