"""The downstream client behind one request, as the bridge sees it: its era, what it answers, who it is.

Owns: `client_channel`, which the MCP server builds for every forwarded
request: whether the client speaks 2026-07-28 (it answers `input_required`
results) or the handshake era (it is sent server-to-client requests on the
request's own channel), whether it can sample or elicit, whether it renders
MCP Apps (the one extension mcpgw carries, so the one it passes up), and its `[auth]`
principal, which the `requestState` it is handed is bound to.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server import apps
from mcp.server.context import ServerRequestContext
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict

from mcpgw.upstream.inflight import ClientChannel


class _AnyResult(BaseModel):
    """A client's result kept whole (the upstream that asked validates it)."""

    model_config = ConfigDict(extra="allow")


_last_modern: tuple[Any, str | None, ClientChannel] | None = None
"""The channel of the latest 2026-07-28 request, with the capabilities (by identity) and principal it
was made of: a modern channel has no per-request part, and a client's requests share their
capabilities object (the stdio lane's connection), so most requests reuse it whole (it is frozen)."""


def client_channel(ctx: ServerRequestContext[Any, Any], *, principal: str | None) -> ClientChannel:
    """What the downstream client behind this request can answer: sampling, elicitation, and how."""
    global _last_modern
    caps = ctx.session.client_capabilities
    modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
    last = _last_modern
    if modern and last is not None and last[0] is caps and last[1] == principal:
        return last[2]

    async def send(method: str, params: dict[str, Any]) -> dict[str, Any]:
        # On the request's own channel: over HTTP it rides the POST's response stream.
        request = types.server_request_adapter.validate_python({"method": method, "params": params})
        metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
        answer = await ctx.session.send_request(request, _AnyResult, metadata=metadata)
        return answer.model_dump(by_alias=True, exclude_none=True)

    channel = ClientChannel(
        can_sample=caps is not None and caps.sampling is not None,
        can_elicit=caps is not None and caps.elicitation is not None,
        elicits_urls=caps is not None and caps.elicitation is not None and caps.elicitation.url is not None,
        apps=apps.client_supports_apps(ctx),
        modern=modern,
        send=None if modern else send,
        principal=principal,
    )
    if modern and caps is not None:
        _last_modern = (caps, principal, channel)
    return channel
