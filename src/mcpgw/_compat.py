"""Every use of another library's private API, one function per use.

Owns: nothing but these shims. Each says which version it was written against
and why the public API does not serve; a library upgrade that breaks one breaks
it here, in one place, and the tests that cover the caller say so.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any


def in_memory_transport(server: Any) -> AbstractAsyncContextManager[tuple[Any, Any]]:
    """Client streams to `server` (a lowlevel `Server` or `MCPServer`) run in this process.

    mcp 2.3: `mcp.client._memory.InMemoryTransport` is what `Client(server)` uses, but it is only
    reachable from the private module. Used for in-process upstreams (the tests' parity harness).
    """
    from mcp.client._memory import InMemoryTransport

    return InMemoryTransport(server)
