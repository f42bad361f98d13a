"""`serveone.born_like`: each request's connection is the one the mcp SDK would make from its envelope."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
from mcp.server.connection import Connection

from mcpgw.server.serveone import born_like

MODERN = "2026-07-28"


@pytest.mark.parametrize(
    ("info", "capabilities"),
    [({"name": "c", "version": "1"}, {"sampling": {}}), (None, {}), ({"name": "c", "version": "1"}, None)],
)
def test_a_connection_born_like_a_template_is_the_one_the_sdk_makes(info: Any, capabilities: Any) -> None:
    """Field for field as `Connection.from_envelope` (a new SDK field would show here), ready, and
    with its own state and exit stack."""
    outbound = object()
    sdk = Connection.from_envelope(MODERN, info, capabilities, outbound=outbound)  # type: ignore[arg-type]
    template = Connection.from_envelope(MODERN, info, capabilities)
    ours = born_like(template, MODERN, outbound=outbound)
    mine, theirs = vars(ours), vars(sdk)
    assert mine.keys() == theirs.keys()
    same = {"outbound", "protocol_version", "session_id", "client_capabilities", "_client_params"}
    assert same <= mine.keys()
    for name in same:
        assert mine[name] == theirs[name], name
    assert ours.initialized.is_set()
    assert ours.state == {} and ours.state is not template.state
    assert isinstance(ours.exit_stack, AsyncExitStack) and ours.exit_stack is not template.exit_stack
