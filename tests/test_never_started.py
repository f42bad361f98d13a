"""A server that never started: its tools' names were never known, yet a call naming its namespace gets
an error saying the server is not up (its state and last error) from a persona allowed its tools, and
exactly the "Unknown tool" any missing name gets from a persona that cannot see that server.

In memory (tests/parity.py): `up` is served in this process; `broken`'s command does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp.shared.exceptions import MCPError

from mcpgw.core.gateway import Gateway
from parity import TestUpstream, gateway_client, registry, served

pytestmark = pytest.mark.anyio

PERSONAS = {
    "sees": {"servers": ["up", "broken"]},
    "other_servers": {"servers": ["up"]},
    "denied": {"deny": ["broken__*"]},
    "allowed_elsewhere": {"allow": ["up__*"]},
}


async def error_of(gateway: Gateway, persona: str | None, name: str) -> tuple[int, str]:
    async with gateway_client(gateway, persona=persona) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(name, {})
    return caught.value.error.code, caught.value.error.message


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    servers = {"up": {}, "broken": {"command": "/nonexistent/mcp-server", "restart": False}}
    async with served(registry(servers, personas=PERSONAS), {"up": TestUpstream()}) as gateway:
        assert gateway.upstreams["broken"].state == "failed"
        yield gateway


@pytest.mark.parametrize("persona", [None, "sees"])
async def test_a_persona_allowed_its_tools_is_told_the_server_is_not_up(
    gateway: Gateway, persona: str | None
) -> None:
    _, message = await error_of(gateway, persona, "broken__anything")
    assert message.startswith("upstream 'broken': down (failed, not restarted; last error: "), message
    assert "command not found" in message and "Unknown tool" not in message


@pytest.mark.parametrize("persona", ["other_servers", "denied", "allowed_elsewhere"])
async def test_a_persona_that_cannot_see_the_server_gets_unknown_tool(gateway: Gateway, persona: str) -> None:
    hidden = await error_of(gateway, persona, "broken__anything")
    missing = await error_of(gateway, persona, "nosuch__anything")
    assert (
        hidden
        == (missing[0], missing[1].replace("nosuch__", "broken__"))
        == (missing[0], "Unknown tool: broken__anything")
    )
