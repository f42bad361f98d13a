"""Instant start with real processes: `mcpgw serve` over stdio lists the catalog it remembered from
its last run while its upstream is still starting, and a call made meanwhile waits for the upstream.

The upstream is `tiny.py --gate PATH`: it reads nothing until PATH exists, a server as slow to start
as the test wants. Without the memory the first listing would wait for it (up to its start-up limit).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import PROCESS_LIMIT, gateway_stdio, modules_after, write_registry
from mcpgw.core.memory import memory_path

TINY = Path(__file__).parent / "servers" / "tiny.py"
MODES = ["auto", "legacy"]


@pytest.fixture(scope="module")
def remembered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A registry whose catalog a first `mcpgw serve` remembered, and its upstream's gate (closed)."""
    folder = tmp_path_factory.mktemp("instant")
    gate = folder / "gate"
    config = write_registry(
        folder / "servers.toml",
        {"slow": {"command": sys.executable, "args": [str(TINY), "--gate", str(gate)]}},
    )
    config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    gate.touch()

    async def first_run() -> None:
        async with gateway_stdio(config) as client:
            await client.list_tools()

    anyio.run(first_run)
    assert "echo" in {
        tool["name"] for tool in json.loads(memory_path(config).read_text())["servers"]["slow"]["tools"]
    }
    gate.unlink()
    yield config, gate


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_the_first_listing_does_not_wait_for_a_slow_upstream(
    remembered: tuple[Path, Path], mode: str
) -> None:
    config, gate = remembered
    answers: list[Any] = []
    try:
        async with gateway_stdio(config, mode=mode) as client:
            with anyio.fail_after(
                20
            ):  # a hang guard: without the memory, this waits out the 30 s start-up limit
                listed = {tool.name for tool in (await client.list_tools()).tools}
            assert {"slow__echo", "slow__sleep"} <= listed
            assert not gate.exists()  # the upstream has read nothing yet

            async def call() -> None:
                answers.append((await client.call_tool("slow__echo", {"message": "waited"})).content[0].text)  # type: ignore[union-attr]

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                gate.touch()
            assert answers == ["waited"]
    finally:
        gate.unlink(missing_ok=True)


def test_serving_stdio_imports_neither_the_http_stack_nor_litellm(tmp_path: Path) -> None:
    """What a stdio start does not need stays unloaded: Starlette's app and the OAuth guard (mcpgw's
    HTTP transport, fastmcp's auth), rich (the HTTP banner), litellm (sampling: at its first use) and
    httpcore (the HTTP upstreams' client: 2.5 MiB, loaded with the first HTTP upstream), sqlite3 (the
    audit log's SQLite store, off here), tomlkit and difflib (the lock file and its diffs, none here)."""
    config = write_registry(tmp_path / "servers.toml", {})
    config.write_text("[gateway]\n\n[audit]\nenabled = false\n")
    script = (
        "import sys\n"
        "from mcpgw.cli import main\n"
        f"sys.argv = ['mcpgw', 'serve', '--config', {str(config)!r}, '--log-level', 'warning']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    loaded = modules_after(script)
    assert "mcpgw.server.stdio" in loaded
    heavy = ("mcpgw.server.http", "mcpgw.server.auth", "fastmcp", "rich", "litellm", "openai", "httpcore")
    heavy += ("sqlite3", "_sqlite3", "tomlkit", "difflib", "mcpgw.config.edit")
    assert not {m for m in loaded if m.startswith(heavy)}


LAZY = (
    "sqlite3",  # the audit log's SQLite store (`audit.store`): off here
    "tomlkit",  # the lock file (`security.pins`) and registry edits (`config.edit`): none here
    "difflib",  # a pin's diff (`mcpgw pin`, the console)
    "mcpgw.config.edit",
    "mcpgw.upstream.login",  # URL upstreams' logins, OAuth grants and lean wire (`upstream.transports`)
    "mcpgw.upstream.grants",
    "mcpgw.upstream.httpwire",
    "mcpgw.upstream.userlogin",  # per-user logins (`core.peruser`): only with [auth]
    "mcp.client.auth",  # the SDK's OAuth client, used only by those
)
"""Modules a stdio gateway loads only once it uses them: together about 2.5 MiB of its RSS."""


@pytest.mark.anyio
async def test_a_stdio_gateway_loads_url_upstream_and_audit_modules_only_when_used(tmp_path: Path) -> None:
    """After serving a call through a stdio upstream (audit off, no lock file), none of `LAZY` is loaded;
    the features needing them load them when used (their own tests: test_audit, test_rug_pull,
    test_registry_cli, the HTTP upstream and login tests)."""
    config = write_registry(
        tmp_path / "servers.toml", {"tiny": {"command": sys.executable, "args": [str(TINY)]}}
    )
    config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    listing = tmp_path / "modules.txt"
    script = (
        "import atexit, os, sys\n"
        "def show():\n"
        f"    open({str(listing)!r} + '.part', 'w').write(' '.join(sorted(sys.modules)))\n"
        f"    os.replace({str(listing)!r} + '.part', {str(listing)!r})\n"
        "atexit.register(show)\n"
        "from mcpgw.cli import main\n"
        "sys.argv = ['mcpgw', *sys.argv[1:]]\n"
        "main()\n"
    )
    args = ["-c", script, "serve", "--config", str(config), "--log-level", "warning"]
    params = StdioServerParameters(command=sys.executable, args=args, env=dict(os.environ))
    async with Client(params, cache=None) as client:  # type: ignore[arg-type]
        answer = await client.call_tool("tiny__echo", {"message": "lean"})
        assert answer.content[0].text == "lean"  # type: ignore[union-attr]
    with anyio.fail_after(PROCESS_LIMIT):  # a hang guard: the gateway exits once stdin closes
        while not listing.exists():
            await anyio.sleep(0.05)
    loaded = set(listing.read_text().split())
    assert {"mcpgw.upstream.stdio", "mcpgw.upstream.transports"} <= loaded
    assert not {m for m in loaded if m.startswith(LAZY)}
