"""The `requestState` mcpgw hands a 2026-07-28 client: sealed, bound to its caller and its call, good once.

Owns: what a state carries back (`Round`: the input requests mcpgw put to the
client, mcpgw's own answers to requests that are not the client's to answer
(roots), the upstream's own state, the exchange it continues), what it is bound
to (`Binding`: persona, principal, upstream, method, tool or URI, arguments),
and `StateSeal`, which seals it with the mcp SDK's AES-256-GCM codec under a
key held by this process and refuses, with a reason the client can act on, a
state that was altered, has expired, was issued to another persona or
principal or for another call, or was already used.

Every state mcpgw puts in front of a client goes through here, whether the
upstream minted one or not: the retry that echoes it is the only way a
client's `inputResponses` reach an upstream, and only for the requests the
state says mcpgw asked.

Why the SDK's codec (`RequestStateSecurity.ephemeral().codec`) and not its
`RequestStateBoundary` server middleware, which wraps the same codec:
- the bridge acts on what a state says (which answers are mcpgw's, which
  requests the client was asked, which exchange it continues), so the check
  must sit where the state is read: `Gateway.call_tool` (and `read_resource`,
  `get_prompt`) is a Python API too, called without the MCP server (the tests
  in memory, an embedder), where no server middleware runs;
- the boundary accepts a state again and again until it expires; a replayed
  state here would deliver answers twice, or re-enter a running exchange;
- the boundary refuses before mcpgw's handler runs, so a refusal would leave
  no audit row, and with one fixed message ("Invalid or expired
  requestState"), where a client should be told the state belongs to another
  persona or another call.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mcp.server.request_state import InvalidRequestState, RequestStateSecurity

from mcpgw.errors import InvalidRequest

VERSION = 1
MAX_LIVE = 10_000
"""States issued and not yet used that are remembered; past this the oldest are forgotten (refused)."""

AGAIN = "call the tool again"


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Binding:
    """Whose call a state belongs to and which call it is; a retry must match all of it."""

    persona: str | None
    principal: str | None
    server: str
    method: str
    target: str
    """The tool or prompt name, or the resource URI, as sent upstream."""
    sent: Any = field(default=None, compare=False, repr=False)
    """The arguments sent upstream; only their digest (`arguments`) is compared, sealed and opened."""

    @cached_property
    def arguments(self) -> str:
        """A digest of the arguments sent upstream: worked out only when a state is sealed or opened,
        not on every call that builds a binding."""
        return _digest(self.sent or {})

    @classmethod
    def of(
        cls,
        server: str,
        method: str,
        params: Mapping[str, Any],
        *,
        persona: str | None,
        principal: str | None,
    ) -> Binding:
        target = params.get("uri") if method == "resources/read" else params.get("name")
        return cls(
            persona=persona,
            principal=principal,
            server=server,
            method=method,
            target=str(target),
            sent=params.get("arguments"),
        )

    def who(self) -> dict[str, Any]:
        # A digest of the principal: the codec encrypts, but the subject need not rely on it.
        return {
            "persona": self.persona,
            "principal": None if self.principal is None else _digest(self.principal),
        }

    def call(self) -> list[str]:
        return [self.server, self.method, self.target, self.arguments]


@dataclass(frozen=True)
class Round:
    """What one state carries back to mcpgw on the client's retry."""

    asked: frozenset[str] = frozenset()
    """The keys of the input requests mcpgw put to the client: only their answers are taken."""
    answers: Mapping[str, Any] = field(default_factory=dict)
    """mcpgw's own answers (roots), put back into `inputResponses` whatever the client sends."""
    upstream_state: Any = None
    """The upstream's own `requestState`, returned to it as it was."""
    exchange: str | None = None
    """The exchange (a handshake-era upstream's call held open) the retry continues."""
    confirm: str | None = None
    """The flow policy whose confirmation mcpgw itself asked for (`core.pipeline`): nothing upstream."""


class StateSeal:
    """Seals and opens every `requestState` of one gateway, and remembers which are still unused."""

    def __init__(self, security: RequestStateSecurity | None = None, *, max_live: int = MAX_LIVE) -> None:
        self.security = security if security is not None else RequestStateSecurity.ephemeral()
        """The codec and lifetime: by default a key made at start and held only by this process."""
        self._max_live = max_live
        self._live: dict[str, float] = {}
        """Nonce -> expiry of each state issued and not yet used."""

    def seal(self, binding: Binding, round: Round, *, ttl: float | None = None) -> str:
        now = time.time()
        expires = now + max(ttl or 0.0, self.security.ttl)
        nonce = secrets.token_urlsafe(12)
        self._forget_expired(now)
        self._live[nonce] = expires
        claims = {
            "v": VERSION,
            "exp": expires,
            "n": nonce,
            "who": binding.who(),
            "call": binding.call(),
            "asked": sorted(round.asked),
            "answers": dict(round.answers),
            "state": round.upstream_state,
            "exchange": round.exchange,
            "confirm": round.confirm,
        }
        return self.security.codec.seal(json.dumps(claims, separators=(",", ":")).encode())

    def open(self, token: Any, binding: Binding) -> Round:
        """The round `token` carries, if it was issued for `binding` and is unused (it is used up now)."""
        claims = self._claims(token)
        if not time.time() < claims["exp"]:
            raise InvalidRequest(f"requestState has expired: {AGAIN}")
        who = binding.who()
        if claims["who"].get("persona") != who["persona"]:
            raise InvalidRequest(f"requestState was issued to a call of another persona: {AGAIN}")
        if claims["who"].get("principal") != who["principal"]:
            raise InvalidRequest(f"requestState was issued to another principal: {AGAIN}")
        if claims["call"] != binding.call():
            raise InvalidRequest(
                "requestState was issued for another call (another tool, resource, prompt or arguments): "
                + AGAIN
            )
        # Checked last: a state shown by the wrong caller stays good for its own.
        if self._live.pop(claims["n"], None) is None:
            raise InvalidRequest(f"requestState was already used (each is good for one retry): {AGAIN}")
        return Round(
            asked=frozenset(claims["asked"]),
            answers=claims["answers"],
            upstream_state=claims["state"],
            exchange=claims["exchange"],
            confirm=claims.get("confirm"),
        )

    def _claims(self, token: Any) -> dict[str, Any]:
        altered = InvalidRequest(f"requestState was altered, or comes from another mcpgw process: {AGAIN}")
        if not isinstance(token, str):
            raise altered
        try:
            claims = json.loads(self.security.codec.unseal(token))
        except (InvalidRequestState, ValueError) as exc:
            raise altered from exc
        if not isinstance(claims, dict) or claims.get("v") != VERSION:
            raise altered
        return claims

    def _forget_expired(self, now: float) -> None:
        if len(self._live) < self._max_live:
            return
        for nonce, expires in list(self._live.items()):
            if expires <= now:
                del self._live[nonce]
        while len(self._live) >= self._max_live:
            del self._live[next(iter(self._live))]
