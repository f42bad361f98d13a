"""What one audit row says: its kind, its outcome, and the `Step` a request fills in.

Owns: the closed sets of row kinds (`Kind`) and outcomes (`Outcome`) that every
writer records and `mcpgw logs --outcome` accepts; the per-request `Step`; the
current step of a request (`current()`, `note()`), which the gateway and the
data rules fill in without being handed it; and `recording`, the one way a
request becomes a step: it makes the step current, tells how the work ended
(ok, error, timeout, cancelled), and hands the step to the log once.
"""

from __future__ import annotations

import base64
import contextvars
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from mcpgw.errors import UpstreamTimeout


def new_request_id() -> str:
    """A request id: 32 lowercase base32 characters, the first 8 the moment its batch of ids was made
    (centiseconds since the epoch, 40 bits) and the other 24 random (120 bits).

    Not hex: one in a few hundred random hex ids holds a run of 13 or more digits that passes the
    card checksum, and the data detectors would redact it wherever a row's JSON names it (a flow
    refusal's chain of steps). Base32's digits are 2 to 7 among letters, so such a run is as good
    as impossible.

    Why the time first: rows written together then share a prefix, so their entries in the
    `request_id` index land on the same few pages of the file. Wholly random ids put every row's
    entry on a page of its own, which made inserting a row about twice as costly, and more so as
    the file grew.
    """
    try:
        return _unused_ids.pop()
    except IndexError:
        # 64 at a time: one `urandom` for 64 requests, each random byte made one base32 digit by its
        # low 5 bits (256 is a multiple of 32: each digit is uniform, 5 random bits, as encoding 15
        # random bytes gives): `base64.b32encode` is pure Python, about 50 us for a batch's bytes.
        # `pop` is atomic across threads.
        made = (int(time.time() * 100) % (1 << 40)).to_bytes(5, "big")
        prefix = base64.b32encode(made).decode("ascii").lower()
        text = os.urandom(24 * _ID_BATCH).translate(_DIGITS).decode("ascii")
        _unused_ids.extend(prefix + text[i : i + 24] for i in range(0, len(text), 24))
        return _unused_ids.pop()


_ID_BATCH = 64
_DIGITS = bytes(b"abcdefghijklmnopqrstuvwxyz234567"[byte & 31] for byte in range(256))
"""A byte's low 5 bits as a lowercase base32 digit (`bytes.translate`'s table)."""
_unused_ids: list[str] = []
os.register_at_fork(after_in_child=_unused_ids.clear)  # a forked child never repeats its parent's ids


class Kind(StrEnum):
    """What a row records."""

    CALL = "call"
    READ = "read"
    PROMPT = "prompt"
    COMPLETE = "complete"
    LIST = "list"
    SUBSCRIBE = "subscribe"
    """`resources/subscribe`, or one resource named on a 2026-07-28 listen stream."""
    AUTH = "auth"
    """A request refused over HTTP with `[auth]`, or an event stream closed at its token's expiry."""
    UPSTREAM = "upstream"
    """An upstream's state change (the row's name is the new state)."""
    SECURITY = "security"
    """A pin or poisoning problem of an upstream's item."""
    CONFIG = "config"
    """A configuration load (the row's name is the registry file)."""
    SAMPLING = "sampling"
    """An upstream's sampling request: its accounting is the row's result."""
    DRAFT = "draft"
    """`mcpgw personas draft`: the job, the route, tokens and cost, what was kept and dropped."""
    ADMIN = "admin"
    """An action taken in the web console (`/admin`): what, on which server, by which principal."""


STAT_KINDS = (Kind.CALL, Kind.READ, Kind.PROMPT, Kind.COMPLETE, Kind.LIST)
"""The client requests `mcpgw stats` counts."""


class Outcome(StrEnum):
    """How a step ended. Anything but `ok` counts as an error in `mcpgw stats`."""

    OK = "ok"
    ERROR = "error"
    """The upstream or the gateway failed, or the result says `isError`; auth: keys unreachable (503)."""
    TIMEOUT = "timeout"
    """An upstream did not answer within its timeout."""
    CANCELLED = "cancelled"
    """The client cancelled, or the gateway stopped, before the step ended."""
    DENIED = "denied"
    """The persona may not use that name; auth: the request was refused."""
    WITHHELD = "withheld"
    """The security policy withholds the item (production mode); security rows: it was withheld."""
    BLOCKED = "blocked"
    """A data rule refused the arguments, the result or a sampling request."""
    WARNING = "warning"
    """Security rows: a problem reported while the item is still served."""
    EXPIRED = "expired"
    """Auth rows: an event stream closed because its token expired."""
    REFUSED = "refused"
    """Sampling rows: refused before anything was sent (policy, budget, a client that cannot answer)."""


CANCELLED_TEXT = "cancelled by the client or at shutdown"


def now(clock: float | None = None) -> str:
    """`clock` (seconds since the epoch; default: now) as a row's `ts`."""
    moment = datetime.now(UTC) if clock is None else datetime.fromtimestamp(clock, UTC)
    return moment.isoformat(timespec="microseconds")


@dataclass(slots=True)
class Step:
    """What one downstream request did; filled in as it is served, recorded once at the end."""

    kind: Kind
    method: str
    persona: str | None = None
    client: str | None = None
    protocol: str | None = None
    principal: str | None = None
    """Who the bearer token says called (`sub=... client_id=...`), over HTTP with `[auth]`."""
    session: str | None = None
    """The agent session the request belongs to (`mcpgw logs --session`): the MCP session of a
    handshake-era client, the session a 2026-07-28 client names, or one the flow policies keep."""
    request_id: str = field(default_factory=new_request_id)
    parent: str | None = None
    """The request id of the workflow call this step ran for (`mcpgw logs --parent`); None: a client's own."""
    server: str | None = None
    name: str | None = None
    outcome: Outcome = Outcome.OK
    error: str | None = None
    arguments: Any = None
    result: Any = None
    findings: str | None = None
    """What data rules found (detector names and counts, never values)."""
    started: float = field(default_factory=time.perf_counter)
    clock: float = field(default_factory=time.time)
    """When the step began; its row's `ts` is made of it by the log's writer thread, off the request."""
    ts: str | None = None
    """The row's `ts` when given (an imported or back-dated step); else made of `clock`."""
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        # A free string would reach the table unchecked; the enums are the table's vocabulary.
        # (Checked by type first: an enum call per field was a tenth of building a step.)
        if type(self.kind) is not Kind:
            self.kind = Kind(self.kind)
        if type(self.outcome) is not Outcome:
            self.outcome = Outcome(self.outcome)

    def ended_by(self, exc: BaseException) -> None:
        """Record how `exc` ended the step; an outcome the gateway already noted (denied, ...) stays."""
        if not isinstance(exc, Exception):  # cancellation, or the process stopping
            self.outcome, self.error = Outcome.CANCELLED, CANCELLED_TEXT
            return
        if self.outcome is Outcome.OK:
            timed_out = isinstance(exc, UpstreamTimeout) or isinstance(exc.__cause__, UpstreamTimeout)
            self.outcome = Outcome.TIMEOUT if timed_out else Outcome.ERROR
        self.error = str(exc) or type(exc).__name__


class Recorder(Protocol):
    """Where finished steps go (the `AuditLog`)."""

    def record_step(self, step: Step) -> None: ...


_current: contextvars.ContextVar[Step | None] = contextvars.ContextVar("mcpgw_step", default=None)


def current() -> Step | None:
    return _current.get()


def note(**values: Any) -> None:
    """Fill in the current request's step (no-op outside one)."""
    step = _current.get()
    if step is not None:
        for key, value in values.items():
            setattr(step, key, Outcome(value) if key == "outcome" else value)


def entered(step: Step) -> contextvars.Token[Step | None]:
    """Make `step` the current one (`recording` without its generator, for the request path); hand
    the token to `left` when the request is done."""
    return _current.set(step)


def left(token: contextvars.Token[Step | None]) -> None:
    _current.reset(token)


@contextmanager
def recording(step: Step, *, into: Recorder | None) -> Iterator[Step]:
    """Serve a request as `step`: current while the block runs, its outcome set by how the block
    ends, and handed to `into` exactly once (nowhere when `into` is None; notes still land on it).
    The block's exception goes on to the caller."""
    token = entered(step)
    try:
        yield step
    except BaseException as exc:
        step.ended_by(exc)
        raise
    finally:
        left(token)
        if into is not None:
            into.record_step(step)
