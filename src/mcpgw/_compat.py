"""Every use of another library's private API, one function per use.

Owns: nothing but these shims. Each says which version it was written against
and why the public API does not serve; a library upgrade that breaks one breaks
it here, in one place, and the tests that cover the caller say so.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx2
    from mcp.client.session import ClientSession


def in_memory_transport(server: Any) -> AbstractAsyncContextManager[tuple[Any, Any]]:
    """Client streams to `server` (a lowlevel `Server` or `MCPServer`) run in this process.

    mcp 2.3: `mcp.client._memory.InMemoryTransport` is what `Client(server)` uses, but it is only
    reachable from the private module. Used for in-process upstreams (the tests' parity harness).
    """
    from mcp.client._memory import InMemoryTransport

    return InMemoryTransport(server)


def negotiate_auto(session: ClientSession) -> Awaitable[None]:
    """Negotiate `session`'s protocol era: `server/discover`, falling back to `initialize`.

    mcp 2.3: `mcp.client._probe.negotiate_auto` is the policy `Client(mode="auto")` runs at connect,
    but `ClientSession` has no public method for it. Used for upstreams configured `era = "auto"`.
    """
    from mcp.client._probe import negotiate_auto

    return negotiate_auto(session)


def mcp_http_client(*, headers: dict[str, str] | None, auth: httpx2.Auth | None) -> httpx2.AsyncClient:
    """An HTTP client with the MCP transports' default timeouts (30s, and 300s to read a stream).

    mcp 2.3: `mcp.shared._httpx_utils.create_mcp_http_client` is what `streamable_http_client` builds
    when given none; we build it ourselves so one pooled client (and its auth) serves a whole session.
    """
    from mcp.shared._httpx_utils import create_mcp_http_client

    return create_mcp_http_client(headers=headers, auth=auth)


def skip_tool_result_validation(session: ClientSession) -> None:
    """Stop `session` checking `tools/call` results against the tool's output schema.

    mcp 2.3: `ClientSession.validate_tool_result` has no switch; replacing the method on the instance is
    the only way off. mcpgw passes results through as the upstream sent them: validating structured
    output is the downstream client's business, not the gateway's.
    """

    async def _no_validation(name: str, result: Any) -> None:
        return None

    session.validate_tool_result = _no_validation  # type: ignore[method-assign]
