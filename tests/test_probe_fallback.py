"""`era = "auto"` against servers that fail the `server/discover` probe, and what is remembered.

A real old-SDK server from PyPI (`mcp-server-sqlite` 2025.4.25 on mcp 1.6.0, in a venv this test
makes once per machine under .tools/) crashes on the probe; `servers/tiny.py --discover MODE`
fails it each other way (an error, a crash, a closed stdout, silence). Through `mcpgw serve` in its
default configuration, each must list its tools at the first `tools/list` and answer calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from conftest import SERVERS, TOOLS_DIR, gateway_stdio, pip_install
from test_lifecycle import alive, wait_until

pytestmark = pytest.mark.anyio

SQLITE_REQUIREMENTS = (
    "mcp-server-sqlite==2025.4.25",
    # What it was released with (April 2025): mcp 1.6.0 crashes on an unknown request method, and
    # needs a pydantic of its time. Unpinned, pip would pick mcp 2.x, which answers the probe.
    "mcp==1.6.0",
    "pydantic==2.11.3",
)
HANG_GUARD = 120.0
"""Seconds a wait may take before the test calls it a hang: never reached on a loaded machine."""


def sqlite_environment() -> Path:
    """mcp-server-sqlite's own environment, made once per machine (`tests/tools.py` too)."""
    return pip_install(TOOLS_DIR / "mcp-server-sqlite", *SQLITE_REQUIREMENTS)


@pytest.fixture(scope="session")
def sqlite_server() -> str:
    binary = sqlite_environment() / "bin" / "mcp-server-sqlite"
    assert binary.exists(), f"{binary} missing after pip install"
    return str(binary)


def tiny(*options: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"command": sys.executable, "args": [str(SERVERS / "tiny.py"), *options]}
    if env:
        entry["env"] = env
    return entry


def probes(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def test_an_old_sdk_server_that_crashes_on_the_probe_serves_through_the_default_config(
    sqlite_server: str, registry_file: Any, tmp_path: Path
) -> None:
    # Its own check first: the probe kills it (so this test reproduces what users met).
    probe = b'{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}\n'
    crashed = subprocess.run(
        [sqlite_server, "--db-path", str(tmp_path / "probe.db")],
        input=probe,
        capture_output=True,
        timeout=HANG_GUARD,
    )
    assert crashed.returncode != 0 and b'"result"' not in crashed.stdout, crashed.stdout

    config = registry_file({"db": {"command": sqlite_server, "args": ["--db-path", str(tmp_path / "t.db")]}})
    async with gateway_stdio(config) as client:
        # The first listing has them: a client that lists once at start (Claude Desktop) sees them.
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"db__read_query", "db__write_query", "db__create_table", "db__list_tables"} <= tools
        created = await client.call_tool("db__create_table", {"query": "CREATE TABLE t (x INTEGER)"})
        assert not created.is_error, created
        await client.call_tool("db__write_query", {"query": "INSERT INTO t VALUES (4242)"})
        read = await client.call_tool("db__read_query", {"query": "SELECT x FROM t"})
        assert not read.is_error and "4242" in read.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["error", "crash", "silent"])
async def test_every_way_a_probe_can_fail_falls_back_to_initialize(
    mode: str, registry_file: Any, tmp_path: Path
) -> None:
    """Silence costs the SDK's probe timeout (10 s) once; the rest fall back at once."""
    log = tmp_path / "probes"
    config = registry_file({"old": tiny("--discover", mode, env={"TINY_PROBE_LOG": str(log)})})
    async with gateway_stdio(config) as client:
        assert "old__echo" in {tool.name for tool in (await client.list_tools()).tools}
        echoed = await client.call_tool("old__echo", {"message": mode})
        assert echoed.content[0].text == mode  # type: ignore[union-attr]
    assert len(probes(log)) == 1  # probed once; what followed was `initialize`


async def test_a_probe_answered_by_closing_stdout_falls_back_to_initialize(
    registry_file: Any, tmp_path: Path
) -> None:
    """The server closes its stdout and lingers. Under asyncio the end of the stream is seen at once
    and a fresh connection with `initialize` follows in the same start-up; under uvloop (what `serve`
    runs on) the child holds copies of its pipes that uvloop leaks into it (uvloop 0.23), so the close
    shows only when the start-up timeout cuts the probe off, and the next life goes straight to
    `initialize`. Either way the server serves, probed once."""
    log = tmp_path / "probes"
    entry = tiny("--discover", "close", env={"TINY_PROBE_LOG": str(log)})
    config = registry_file({"old": entry}, startup_timeout=10)
    async with gateway_stdio(config) as client:
        with anyio.fail_after(HANG_GUARD):
            while "old__echo" not in {tool.name for tool in (await client.list_tools()).tools}:
                await anyio.sleep(0.1)
        echoed = await client.call_tool("old__echo", {"message": "closed"})
        assert echoed.content[0].text == "closed"  # type: ignore[union-attr]
    assert len(probes(log)) == 1


async def test_the_era_that_worked_is_remembered_across_restarts(registry_file: Any, tmp_path: Path) -> None:
    log = tmp_path / "probes"
    config = registry_file({"old": tiny("--discover", "crash", env={"TINY_PROBE_LOG": str(log)})})
    async with gateway_stdio(config) as client:
        first = (await client.call_tool("old__pid", {})).structured_content
        assert first is not None
        pid = int(first["result"])
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(pid), HANG_GUARD)

        async def restarted() -> int | None:
            try:
                result = await client.call_tool("old__pid", {})
            except MCPError:
                return None  # down, or restarting
            content = result.structured_content
            return None if result.is_error or content is None else int(content["result"])

        with anyio.fail_after(HANG_GUARD):
            while (again := await restarted()) in (None, pid):
                await anyio.sleep(0.1)
        assert again is not None and alive(again)
    # One probe in all: the restarted server went straight to `initialize`.
    assert len(probes(log)) == 1


async def test_a_closed_stdout_is_seen_at_once_and_initialize_follows_in_the_same_start(
    tmp_path: Path,
) -> None:
    """On asyncio (no uvloop leak) the close ends the probe at once: the first start settles ready."""
    from mcpgw.config import StdioServer
    from mcpgw.upstream import Upstream

    log = tmp_path / "probes"
    server = StdioServer(
        command=sys.executable,
        args=[str(SERVERS / "tiny.py"), "--discover", "close"],
        env={"TINY_PROBE_LOG": str(log)},
    )
    upstream = Upstream("old", server, timeout=HANG_GUARD, startup_timeout=HANG_GUARD, restart=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(upstream.run)
        try:
            await upstream.wait_settled()
            assert upstream.state == "ready", upstream.error
            assert upstream.era == "handshake" and len(probes(log)) == 1
            assert "echo" in {tool["name"] for tool in upstream.lists["tools"]}
        finally:
            upstream.stop()
