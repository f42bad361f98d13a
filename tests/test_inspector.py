"""The MCP Inspector CLI (a real, non-Python client) against `mcpgw serve`, over stdio and HTTP.

JSON mode prints `{"result": ...}` on stdout and exits 0; an unknown tool or a
tool result with isError exits 5 with an error envelope on stderr.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import (
    background,
    free_port,
    inspector_command,
    lite_server,
    mcpgw_command,
    write_registry,
)

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "modern"]  # the inspector's --protocol-era: 2025-11-25 handshake, or 2026-07-28


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def result(self) -> dict[str, Any]:
        assert self.code == 0, f"inspector exited {self.code}: {self.stderr}"
        return json.loads(self.stdout)["result"]  # type: ignore[no-any-return]

    def error(self) -> dict[str, Any]:
        assert self.code != 0, f"inspector unexpectedly succeeded: {self.stdout}"
        return json.loads(self.stderr.strip().splitlines()[-1])["error"]  # type: ignore[no-any-return]


@pytest.fixture
def inspector(node22: str, inspector_js: str, tmp_path: Path) -> Any:
    """Run the inspector CLI once; its catalog, client config and home stay inside tmp_path."""
    home = tmp_path / "inspector-home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "MCP_CATALOG_PATH": str(home / "mcp.json"),
        "MCP_CLIENT_CONFIG_PATH": str(home / "client.json"),
    }

    async def run(target: Sequence[str], *options: str, era: str = "legacy") -> Run:
        command = inspector_command(node22, inspector_js, era, *options, target=list(target))
        with anyio.fail_after(30):
            done = await anyio.run_process(command, check=False, env={**os.environ, **env})
        return Run(done.returncode, done.stdout.decode(), done.stderr.decode())

    return run


def check_listing(result: dict[str, Any]) -> None:
    tools = {tool["name"]: tool for tool in result["tools"]}
    assert "up__echo" in tools
    assert all(name.startswith("up__") for name in tools)
    assert {"up__add", "up__pid", "up__fail"} <= set(tools)
    assert tools["up__echo"]["inputSchema"]["properties"] == {"message": {"type": "string"}}
    assert tools["up__echo"]["description"] == "Echo the message back."


def check_echo(result: dict[str, Any], era: str) -> None:
    assert result["content"] == [{"type": "text", "text": "hi"}]
    assert result.get("isError") is False
    assert result["structuredContent"] == {"result": "hi"}
    # The upstream's own protocol stamp never reaches the client; a 2026-07-28 client sees mcpgw's.
    stamp = (result.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo")
    if era == "modern":
        assert stamp is not None and stamp["name"] == "mcpgw"
    else:
        assert stamp is None


@pytest.mark.long
@pytest.mark.parametrize("era", ERAS)
async def test_inspector_against_gateway_over_stdio(era: str, inspector: Any, registry_file: Any) -> None:
    config = registry_file({"up": lite_server()})
    gateway = mcpgw_command("serve", "--config", str(config), "--log-level", "warning")

    check_listing((await inspector(gateway, "--method", "tools/list", era=era)).result())

    call = await inspector(
        gateway, "--method", "tools/call", "--tool-name", "up__echo", "--tool-arg", "message=hi", era=era
    )
    check_echo(call.result(), era)

    unknown = await inspector(gateway, "--method", "tools/call", "--tool-name", "up__nope", era=era)
    assert unknown.code == 5
    assert unknown.error()["code"] == "tool_not_found"
    assert unknown.stdout == ""

    failing = await inspector(
        gateway,
        "--method",
        "tools/call",
        "--tool-name",
        "up__fail",
        "--tool-arg",
        "reason=on purpose",
        era=era,
    )
    assert failing.code == 5
    assert failing.error()["code"] == "tool_is_error"


@pytest.fixture(scope="module")
def http_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `mcpgw serve --transport http` for both eras' inspectors (each a client of its own, that
    lists and calls, changing nothing); yields its /mcp URL."""
    folder = tmp_path_factory.mktemp("inspector-http")
    config = write_registry(folder / "servers.toml", {"up": lite_server()})
    port = free_port()
    command = mcpgw_command(
        "serve", "--config", str(config), "--transport", "http", "--port", str(port), "--log-level", "warning"
    )
    with background(command, port=port, env={"MCPGW_AUDIT_DB": str(folder / "audit.db")}):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.mark.parametrize("era", ERAS)
async def test_inspector_against_gateway_over_http(era: str, inspector: Any, http_gateway: str) -> None:
    url = http_gateway
    check_listing((await inspector([url], "--method", "tools/list", era=era)).result())

    call = await inspector(
        [url], "--method", "tools/call", "--tool-name", "up__echo", "--tool-arg", "message=hi", era=era
    )
    check_echo(call.result(), era)

    unknown = await inspector([url], "--method", "tools/call", "--tool-name", "up__nope", era=era)
    assert unknown.code == 5
    assert unknown.error()["code"] == "tool_not_found"
