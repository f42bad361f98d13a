"""Roots that a 2026-07-28 upstream asks for alongside input the downstream client answers itself.

Owns: keeping mcpgw the one that answers roots when an upstream's
`input_required` result goes on to a 2026-07-28 client. mcpgw answers an
upstream's roots with the registry's `roots` for that server, in both eras (a
handshake-era `roots/list` request, a 2026-07-28 `roots/list` input request).
When the same result also asks for sampling or elicitation that the client
answers (`Sampler.passes_through`), the result goes to the client whole, so the
client would be asked for roots that are not its to give (and an mcp client
without a roots callback fails the call). Instead the roots requests are taken
out of what the client sees; mcpgw's answers ride in the `requestState` the
client echoes back, sealed with an HMAC key of this gateway process so a client
cannot alter them, and are put back into `inputResponses` on the client's retry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from mcpgw.errors import InvalidRequest

ROOTS = "roots/list"
PREFIX = "mcpgw-roots.1."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RootsSeal:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _tag(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def take(self, result: dict[str, Any], answer: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """`result` without its roots requests, their answers sealed into its `requestState`."""
        requests = result.get("inputRequests")
        if not isinstance(requests, dict):
            return result
        mine = [k for k, r in requests.items() if isinstance(r, dict) and r.get("method") == ROOTS]
        if not mine:
            return result
        payload = {"answers": {key: answer() for key in mine}, "state": result.get("requestState")}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        kept = {k: r for k, r in requests.items() if k not in mine}
        return {**result, "inputRequests": kept, "requestState": f"{PREFIX}{body}.{self._tag(body)}"}

    def open(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A client's retry with mcpgw's sealed answers put back, and the upstream's own state restored."""
        state = params.get("requestState")
        if not isinstance(state, str) or not state.startswith(PREFIX):
            return dict(params)
        body, _, tag = state[len(PREFIX) :].rpartition(".")
        if not hmac.compare_digest(tag, self._tag(body)):
            raise InvalidRequest(
                "requestState was altered, or comes from another mcpgw process: call the tool again"
            )
        sealed = json.loads(_unb64(body))
        opened = {**params, "inputResponses": {**(params.get("inputResponses") or {}), **sealed["answers"]}}
        if sealed["state"] is None:
            del opened["requestState"]
        else:
            opened["requestState"] = sealed["state"]
        return opened
