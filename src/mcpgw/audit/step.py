"""The per-request `Step` and the current step of a request.

Owns: the `Step` a request fills in as it is served, and the current step of a
request (`current()`, `note()`), which the gateway and the data rules fill in
without being handed it.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Step:
    """What one downstream request did; filled in as it is served, recorded once at the end."""

    kind: str
    method: str
    persona: str | None = None
    client: str | None = None
    protocol: str | None = None
    principal: str | None = None
    """Who the bearer token says called (`sub=... client_id=...`), over HTTP with `[auth]`."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    server: str | None = None
    name: str | None = None
    outcome: str = "ok"
    error: str | None = None
    arguments: Any = None
    result: Any = None
    findings: str | None = None
    """What data rules found (detector names and counts, never values)."""
    started: float = field(default_factory=time.perf_counter)
    ts: str = field(default_factory=lambda: now())
    latency_ms: float = 0.0


_current: contextvars.ContextVar[Step | None] = contextvars.ContextVar("mcpgw_step", default=None)


def current() -> Step | None:
    return _current.get()


def note(**values: Any) -> None:
    """Fill in the current request's step (no-op outside one)."""
    step = _current.get()
    if step is not None:
        for key, value in values.items():
            setattr(step, key, value)
