"""The registry's flow-policy tables: tool labels' vocabulary and `[security.flows]`, `[personas.X.flows]`.

Owns: `Label` (what a tool can do with data), `FlowPolicy` (what a session may do after what it
has done; per persona, each key falling back to `[security.flows]`) and `FlowSettings` (the
gateway-wide policy plus how sessions are tracked and bounded). Enforcing them is
`security.flows`'s.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mcpgw.config.base import Strict

Label = Literal["private", "untrusted", "egress", "destructive"]
"""`private`: its results are private data; `untrusted`: its results are content from outside (a web
page, an issue, an e-mail) that may carry injected instructions; `egress`: it can send data out
(network, messages, writes to shared places); `destructive`: it deletes or overwrites."""
LABELS: tuple[Label, ...] = ("private", "untrusted", "egress", "destructive")

EgressAction = Literal["refuse", "confirm", "allow"]
"""`confirm`: ask the user (an elicitation) and proceed only on their yes."""


class FlowPolicy(Strict):
    """`[personas.NAME.flows]` (or the policy part of `[security.flows]`): what a session may do next."""

    untrusted_egress: EgressAction | None = None
    """An `egress` call in a session that has read `private` data and `untrusted` content."""
    private_data_egress: Literal["refuse", "allow"] | None = None
    """An `egress` call whose arguments hold a value a `private` tool returned (also inside longer text)."""
    max_destructive: Annotated[int, Field(ge=0)] | None = None
    """`destructive` calls per session; no cap when absent."""


class FlowSettings(FlowPolicy):
    """`[security.flows]`: the policy every persona starts from, and how sessions are tracked."""

    session_window: Annotated[float, Field(gt=0)] = 1800.0
    """Seconds a session is kept after its last call; also the window in which a 2026-07-28 client's
    calls that name no session count as one session of its principal."""
    max_sessions: Annotated[int, Field(ge=1)] = 1000
    """Sessions tracked at once; the least recently used is forgotten first."""
    max_sessions_per_client: Annotated[int, Field(ge=1)] = 64
    """Sessions one 2026-07-28 client may name at once; its least recently used goes first."""
    max_fingerprints: Annotated[int, Field(ge=16)] = 5000
    """Fingerprints of private values kept per session; the oldest are forgotten first."""
    max_fingerprints_total: Annotated[int, Field(ge=16)] = 500_000
    """Fingerprints kept in all sessions together (about 100 bytes each); past it, the least recently
    used sessions are forgotten first (never the one being served)."""
    min_value_length: Annotated[int, Field(ge=4)] = 8
    """Private values shorter than this (in characters) are not fingerprinted: too common to match."""
