"""Instant start with real processes: `mcpgw serve` over stdio lists the catalog it remembered from
its last run while its upstream is still starting, and a call made meanwhile waits for the upstream.

The upstream is `tiny.py --gate PATH`: it reads nothing until PATH exists, a server as slow to start
as the test wants. Without the memory the first listing would wait for it (up to its start-up limit).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import gateway_stdio, write_registry
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
