"""Flow policies: govern an agent session's sequence of steps, not only each call.

Owns: a tool's flow labels (`labels_of`: the registry's, else its annotations'), the flow state
of each agent session (`FlowSession`: the steps it took, the labels it touched, fingerprints of
the private values it was given), bounded in number and in age (`Flows`), and the policies'
verdict on a call before it is forwarded (`FlowCall.check`) and what its result adds to the
session after (`FlowCall.done`). The pipeline (`core.pipeline`) calls both; the server layer
says which session a request belongs to (`SessionRef`).

The policies, each named in its refusal:

    private-data-egress   an `egress` call whose arguments hold a value a `private` tool
                          returned in this session (also inside a longer text)
    max-destructive       more `destructive` calls in one session than `max_destructive`
    untrusted-egress      an `egress` call after the session read `private` data and
                          `untrusted` content: refused, or asked of the user (`confirm`)

Labels come from the registry (`labels` per server, `tool_labels` per tool). Without them, a
tool's annotations say what they can: `readOnlyHint: true` is neither egress nor destructive;
`destructiveHint: true` is destructive; `openWorldHint: true` is untrusted (it reads the outside
world) and, unless read-only, egress. Only hints a tool states count: the spec's defaults
(every unannotated tool open-world and destructive) would label everything. Nothing is
`private` unless the registry says so.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mcpgw.config import Registry
from mcpgw.config.flows import Label
from mcpgw.security.fingerprints import Fingerprints, values_of

Policy = Literal["private-data-egress", "max-destructive", "untrusted-egress"]
_STEPS_KEPT = 32
"""Recent steps a session keeps for the chain a refusal shows (the private and untrusted steps
that matter are kept apart, however old)."""


def labels_of(config: Any, name: str, definition: Mapping[str, Any] | None) -> frozenset[Label]:
    """The labels of upstream tool `name` of the server configured by `config` (see the docstring)."""
    given = config.tool_labels.get(name)
    if given is None:
        given = config.labels
    if given is not None:
        return frozenset(given)
    hints = (definition or {}).get("annotations") or {}
    found: set[Label] = set()
    read_only = hints.get("readOnlyHint") is True
    if hints.get("destructiveHint") is True and not read_only:
        found.add("destructive")
    if hints.get("openWorldHint") is True:
        found.add("untrusted")
        if not read_only:
            found.add("egress")
    return frozenset(found)


@dataclass(frozen=True)
class SessionRef:
    """Which agent session a request belongs to, as the server layer can tell."""

    key: str
    """What the state is kept under (scoped by who the client is where the client names it)."""
    id: str | None = None
    """The id the audit log shows; None: the session is the client's calls within `session_window`,
    and the state names itself."""
    client: str | None = None
    """Who named the session (a 2026-07-28 client's own id): `max_sessions_per_client` counts these."""


@dataclass(frozen=True)
class Step:
    index: int
    name: str
    labels: frozenset[Label]
    request_id: str | None

    def __str__(self) -> str:
        shown = "+".join(sorted(self.labels)) or "unlabelled"
        return f"step {self.index}: {self.name} ({shown})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.index,
            "name": self.name,
            "labels": sorted(self.labels),
            "request_id": self.request_id,
        }


@dataclass
class FlowSession:
    """What one agent session has done: its steps, the labels touched, its private values' fingerprints."""

    id: str
    key: str
    fingerprints: Fingerprints
    client: str | None = None
    last: float = 0.0
    count: int = 0
    steps: deque[Step] = field(default_factory=lambda: deque(maxlen=_STEPS_KEPT))
    private: Step | None = None
    untrusted: Step | None = None
    destructive: list[Step] = field(default_factory=list)
    """The last few destructive steps (their number is `destructive_count`)."""
    destructive_count: int = 0
    sources: dict[int, Step] = field(default_factory=dict)
    """The private steps fingerprints may name (the most recent `_STEPS_KEPT`)."""

    def step(self, name: str, labels: frozenset[Label], request_id: str | None) -> Step:
        self.count += 1
        step = Step(self.count, name, labels, request_id)
        self.steps.append(step)
        return step


@dataclass(frozen=True)
class Refusal:
    policy: Policy
    message: str
    chain: tuple[Step, ...]
    confirmable: bool = False
    """`untrusted-egress` under `confirm`: the user may say yes."""

    def record(self) -> dict[str, Any]:
        """The audit row's account: the policy and the steps that led to it."""
        return {"policy": self.policy, "steps": [s.as_dict() for s in self.chain]}


@dataclass(frozen=True)
class Resolved:
    """One persona's policy, every key decided."""

    untrusted_egress: str
    private_data_egress: str
    max_destructive: int | None


class FlowCall:
    """One call's passage through the flow policies: checked before it is sent, noted after."""

    def __init__(
        self,
        owner: Flows,
        session: FlowSession,
        policy: Resolved,
        name: str,
        labels: frozenset[Label],
        request_id: str | None,
    ) -> None:
        self.session, self.policy, self.name, self.labels = session, policy, name, labels
        self.request_id = request_id
        self._owner = owner
        self._step: Step | None = None

    def check(self, arguments: Any) -> Refusal | None:
        """The first policy this call breaks, or None. A call that passes is a step of the session."""
        session, policy, name = self.session, self.policy, self.name
        refusal: Refusal | None = None
        if "egress" in self.labels and policy.private_data_egress == "refuse" and arguments is not None:
            source = session.fingerprints.find(arguments)
            if source is not None:
                origin = session.sources.get(source)
                said = str(origin) if origin is not None else f"step {source}"
                refusal = Refusal(
                    "private-data-egress",
                    f"its arguments hold a value that came from private data ({said}), "
                    f"and {name} can send data out",
                    (origin,) if origin is not None else (),
                )
        if refusal is None and "destructive" in self.labels and policy.max_destructive is not None:
            done = session.destructive
            if session.destructive_count >= policy.max_destructive:
                listed = ", ".join(str(s) for s in done[-5:])
                refusal = Refusal(
                    "max-destructive",
                    f"this session has made {session.destructive_count} destructive calls, the limit"
                    + (f" ({listed})" if listed else ""),
                    tuple(done[-5:]),
                )
        if (
            refusal is None
            and "egress" in self.labels
            and policy.untrusted_egress != "allow"
            and session.private is not None
            and session.untrusted is not None
        ):
            private, untrusted = session.private, session.untrusted
            chain = tuple(sorted({private, untrusted}, key=lambda s: s.index))
            refusal = Refusal(
                "untrusted-egress",
                f"this session read private data ({private}) and untrusted content ({untrusted}), "
                f"and {name} can send data out",
                chain,
                confirmable=policy.untrusted_egress == "confirm",
            )
        if refusal is None:
            self.passed()
        return refusal

    def passed(self) -> None:
        """The call goes on (it passed, or the user confirmed it)."""
        self._step = step = self.session.step(self.name, self.labels, self.request_id)
        if "destructive" in step.labels:
            self.session.destructive_count += 1
            self.session.destructive.append(step)
            del self.session.destructive[:-5]

    def refused(self, refusal: Refusal) -> str:
        """The error the client sees; the refused call is a step too (later refusals may name it)."""
        step = self.session.step(self.name, self.labels, self.request_id)
        return f"refused by flow policy {refusal.policy} (step {step.index}: {self.name}): {refusal.message}"

    def done(self, result: Any) -> None:
        """What the result adds to the session: its private values, the labels it carried in."""
        step, session = self._step, self.session
        if step is None:
            return
        if "private" in step.labels:  # an error result's text reached the model too
            before = len(session.fingerprints)
            session.fingerprints.add(values_of(result), step.index)
            self._owner.grew(session, len(session.fingerprints) - before)
            session.sources[step.index] = step
            if len(session.sources) > _STEPS_KEPT:
                del session.sources[next(iter(session.sources))]
        if isinstance(result, Mapping) and result.get("isError"):
            return  # a failed read or fetch: no private data or outside content came in
        if "private" in step.labels and session.private is None:
            session.private = step
        if "untrusted" in step.labels and session.untrusted is None:
            session.untrusted = step


class Flows:
    """Every session's flow state, bounded: `max_sessions` (least recently used forgotten first), each
    forgotten `session_window` seconds after its last call."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: OrderedDict[str, FlowSession] = OrderedDict()
        self._total = 0
        """Fingerprints held in all sessions."""
        self._named: Counter[str] = Counter()
        """Sessions each client named (`SessionRef.client`)."""
        self._limits: tuple[float, int, int, int, int, int] = (1800.0, 1000, 5000, 500_000, 8, 64)
        self._resolved: tuple[Registry | None, dict[str | None, Resolved | None]] = (None, {})

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def fingerprints(self) -> int:
        return self._total

    def grew(self, session: FlowSession, added: int) -> None:
        """`session` holds `added` more fingerprints: past the total, the least recently used go."""
        if self._sessions.get(session.key) is not session:
            return  # forgotten while its call ran: its fingerprints go with it
        self._total += added
        while self._total > self._limits[3] and len(self._sessions) > 1:
            key, oldest = next(iter(self._sessions.items()))
            if oldest is session:
                break  # only the one being served is left that holds any
            self._forget(key)

    def _forget(self, key: str) -> None:
        session = self._sessions.pop(key)
        self._total -= len(session.fingerprints)
        if session.client is not None:
            self._named[session.client] -= 1
            if not self._named[session.client]:
                del self._named[session.client]

    def policy(self, registry: Registry, persona: str | None) -> Resolved | None:
        """`persona`'s flow policy, or None when no flow policy applies to it (the call path does nothing)."""
        cached_for, cache = self._resolved
        if cached_for is not registry:
            cache = {}
            self._resolved = (registry, cache)
        if persona not in cache:
            cache[persona] = _resolve(registry, persona)
        return cache[persona]

    def begin(
        self,
        registry: Registry,
        policy: Resolved,
        ref: SessionRef,
        *,
        name: str,
        labels: frozenset[Label],
        request_id: str | None,
    ) -> FlowCall:
        """A call of `ref`'s session under `policy` (`Flows.policy`), the session made if it is new."""
        return FlowCall(self, self._session(registry, ref), policy, name, labels, request_id)

    def _session(self, registry: Registry, ref: SessionRef) -> FlowSession:
        settings = registry.security.flows
        if settings is not None:
            self._limits = (
                settings.session_window,
                settings.max_sessions,
                settings.max_fingerprints,
                settings.max_fingerprints_total,
                settings.min_value_length,
                settings.max_sessions_per_client,
            )
        window, cap, limit, _, least, per_client = self._limits
        now = self._clock()
        sessions = self._sessions
        while sessions:  # the oldest first: stop at the first still in its window
            key, oldest = next(iter(sessions.items()))
            if now - oldest.last <= window:
                break
            self._forget(key)
        session = sessions.get(ref.key)
        if session is None:
            if ref.client is not None and self._named[ref.client] >= per_client:
                self._forget(next(k for k, s in sessions.items() if s.client == ref.client))
            session = FlowSession(
                id=ref.id or f"flow-{uuid.uuid4().hex[:12]}",
                key=ref.key,
                fingerprints=Fingerprints(limit=limit, min_length=least),
                client=ref.client,
            )
            sessions[ref.key] = session
            if ref.client is not None:
                self._named[ref.client] += 1
            while len(sessions) > cap:
                self._forget(next(iter(sessions)))
        else:
            sessions.move_to_end(ref.key)
        session.last = now
        return session


def _resolve(registry: Registry, persona: str | None) -> Resolved | None:
    base = registry.security.flows
    own = registry.personas[persona].flows if persona in registry.personas else None
    if base is None and own is None:
        return None

    def pick(key: str, default: Any) -> Any:
        for source in (own, base):
            if source is not None and key in source.model_fields_set:
                return getattr(source, key)
        return default

    return Resolved(
        untrusted_egress=pick("untrusted_egress", "refuse"),
        private_data_egress=pick("private_data_egress", "refuse"),
        max_destructive=pick("max_destructive", None),
    )
