"""The fields of the request being served, as every observer of it names them.

Owns: one context variable holding the current request's `Fields` (request id, trace id,
persona, server, tool, the time spent upstream), `serving` (the one way a request gets
them, at the server boundary; `back` returns to them for work done after its answer),
`routed` and `forwarded` (the pipeline fills them in once it knows where the request goes
and how long the upstream took), and `upstream`, which an upstream's own tasks run under,
so their log lines name their server.

The log format (`observe.logs`) reads every line's fields from here, metrics read the
server, tool and upstream time, and tracing fills in `trace_id` (and reads the rest).
`Fields` is mutable on purpose: a task the request starts shares its request's fields.
`bound` sets fields for a block before the request is served (tracing's trace id).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

UNKNOWN = "(unknown)"
"""What a name no catalog has is shown as, in metric labels and span names: a client cannot mint them."""


@dataclass(slots=True)
class Fields:
    """What is known about the request (or upstream task) being served; None: not known (yet)."""

    request_id: str | None = None
    """The audit row's `request_id`: a log line joins its row on it."""
    trace_id: str | None = None
    """The OpenTelemetry trace id (32 hex digits) once tracing is on."""
    persona: str | None = None
    server: str | None = None
    """The upstream the request was routed to."""
    tool: str | None = None
    """The catalog name the request was resolved to: a tool or prompt (never a URI)."""
    upstream_seconds: float = 0.0
    """Time spent in the forward stage: the upstream's share of the request's latency."""


_EMPTY = Fields()
_current: contextvars.ContextVar[Fields] = contextvars.ContextVar("mcpgw_fields", default=_EMPTY)


def current() -> Fields:
    """The current request's fields (an empty, shared `Fields` outside of one: read, do not write)."""
    return _current.get()


@contextmanager
def serving(*, request_id: str, persona: str | None) -> Iterator[Fields]:
    """Serve one client request under fresh fields for the duration of the block."""
    fields, token = entered(request_id=request_id, persona=persona)
    try:
        yield fields
    finally:
        left(token)


def entered(*, request_id: str, persona: str | None) -> tuple[Fields, contextvars.Token[Fields]]:
    """`serving` without its generator (the request path): the fresh fields, and the token `left` takes."""
    fields = Fields(request_id=request_id, persona=persona, trace_id=_current.get().trace_id)
    return fields, _current.set(fields)


def left(token: contextvars.Token[Fields]) -> None:
    _current.reset(token)


def back(fields: Fields) -> contextvars.Token[Fields]:
    """Back under a request's own `fields`: its bookkeeping run after it was answered
    (`server.afteranswer`), whose log lines still name the request. Hand the token to `left` when
    the work is done."""
    return _current.set(fields)


@contextmanager
def bound(**values: Any) -> Iterator[Fields]:
    """A copy of the current fields with `values`, for the block: what is known before a request is
    served (a trace id from an incoming `traceparent`) is carried into it by `serving`."""
    token = _current.set(replace(_current.get(), **values))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


@contextmanager
def upstream(name: str) -> Iterator[Fields]:
    """Run an upstream's own work (start, pings, restarts) under its name."""
    token = _current.set(Fields(server=name))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def routed(*, server: str | None, tool: str | None) -> None:
    """The pipeline resolved the current request (no-op outside one)."""
    fields = _current.get()
    if fields is not _EMPTY:
        fields.server, fields.tool = server, tool


def forwarded(seconds: float) -> None:
    """The upstream's share of the current request (no-op outside one)."""
    fields = _current.get()
    if fields is not _EMPTY:
        fields.upstream_seconds += seconds
