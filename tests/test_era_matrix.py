"""The era matrix: every client era x every upstream era x both upstream transports, through mcpgw.

Client eras: 2025-06-18 and 2025-11-25 (the `initialize` handshake) and
2026-07-28 (stateless). The client is a real mcp `Client` pinned to its
version; the upstream is the conformance fixture pinned with `--protocol` to
speak exactly one version (the other era's entry point refused), over stdio or
streamable HTTP. One gateway per upstream era and transport (six), shared by
the module, serving HTTP; each cell connects its own pinned client.

Each cell checks: list, a call with progress, cancellation reaching the
upstream, a resource read, a prompt, a list change, and an elicitation relayed
to the client in its own era (a server request for handshake-era clients, an
input_required round trip for 2026-07-28 ones).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

from conftest import SERVERS, TLS, free_port, mcpgw_command, stop_group, wait_for_port, write_registry

pytestmark = pytest.mark.anyio

FIXTURE = SERVERS / "conformance.py"
ERAS = ["2025-06-18", "2025-11-25", "2026-07-28"]
TRANSPORTS = ["stdio", "http"]
HANDSHAKE = ("2025-06-18", "2025-11-25")
CELLS = [(c, u, t) for c in ERAS for u in ERAS for t in TRANSPORTS]


@dataclass
class Gateway:
    url: str
    marker: Path

    def cancellations(self) -> int:
        return len(self.marker.read_text().splitlines()) if self.marker.exists() else 0

    def sleeps_started(self) -> int:
        started = started_marker(self.marker)
        return len(started.read_text().splitlines()) if started.exists() else 0


def started_marker(cancelled: Path) -> Path:
    """Where the fixture notes each `era_sleep` as it starts (beside its cancellation marker)."""
    return cancelled.with_name(f"{cancelled.stem}-started.txt")


def markers(cancelled: Path) -> dict[str, str]:
    return {"FIXTURE_CANCEL_MARKER": str(cancelled), "FIXTURE_START_MARKER": str(started_marker(cancelled))}


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    health = url.removesuffix("/mcp") + "/healthz"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"gateway exited: {process.stderr.read() if process.stderr else ''}"
        try:
            response = httpx.get(health, timeout=2, verify=TLS)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{health} not healthy within {timeout}s")


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Gateway]]:
    """Six gateways (upstream era x transport), all started at once, each with one pinned fixture."""
    folder = tmp_path_factory.mktemp("era-matrix")
    with ExitStack() as stack:
        fixtures: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        for era in ERAS:
            port = free_port()
            marker = folder / f"cancelled-http-{era}.txt"
            command = [sys.executable, str(FIXTURE), "--http", str(port), "--protocol", era]
            process = _start(command, markers(marker))
            stack.callback(stop_group, process)
            fixtures[era] = (f"http://127.0.0.1:{port}/mcp", process)
        for url, process in fixtures.values():
            wait_for_port(int(url.rsplit(":", 1)[1].split("/")[0]), process=process, timeout=60)
        started: dict[tuple[str, str], tuple[Gateway, subprocess.Popen[bytes]]] = {}
        for era in ERAS:
            for transport in TRANSPORTS:
                marker = folder / f"cancelled-{transport}-{era}.txt"
                if transport == "stdio":
                    entry: dict[str, Any] = {
                        "command": sys.executable,
                        "args": [str(FIXTURE), "--protocol", era],
                        "env": markers(marker),
                    }
                else:
                    entry = {"url": fixtures[era][0]}
                # The default configuration: elicitation is declared to handshake-era upstreams.
                config = write_registry(folder / f"servers-{transport}-{era}.toml", {"up": entry})
                port = free_port()
                command = mcpgw_command(
                    "serve", "--config", str(config), "--transport", "http", "--port", str(port)
                )
                process = _start(
                    [*command, "--log-level", "warning"], {"MCPGW_AUDIT_DB": str(folder / f"audit-{port}.db")}
                )
                stack.callback(stop_group, process)
                started[(era, transport)] = (Gateway(f"http://127.0.0.1:{port}/mcp", marker), process)
        for (era, _), (gateway, process) in started.items():
            health = _wait_healthy(gateway.url, process)
            # The upstream really speaks the one era it was pinned to.
            assert health["upstreams"]["up"]["protocol"] == era, health
        yield {key: gateway for key, (gateway, _) in started.items()}


@asynccontextmanager
async def pinned_client(url: str, era: str, **kwargs: Any) -> AsyncIterator[Client]:
    """An mcp client that speaks exactly `era` (the SDK's handshake asks for its newest version)."""
    if era in HANDSHAKE:
        with mock.patch("mcp.client.session.LATEST_HANDSHAKE_VERSION", era):
            async with Client(url, mode="legacy", cache=None, **kwargs) as client:  # type: ignore[arg-type]
                assert client.protocol_version == era
                yield client
    else:
        async with Client(url, mode=era, cache=None, **kwargs) as client:  # type: ignore[arg-type]
            assert client.protocol_version == era
            yield client


def cell_id(cell: tuple[str, str, str]) -> str:
    client, upstream, transport = cell
    return f"client-{client}|upstream-{upstream}-{transport}"


@pytest.mark.long
@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
async def test_cell(cell: tuple[str, str, str], gateways: dict[tuple[str, str], Gateway]) -> None:
    client_era, upstream_era, transport = cell
    gateway = gateways[(upstream_era, transport)]
    async with pinned_client(gateway.url, client_era) as client:
        # list
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"up__test_simple_text", "up__era_sleep", "up__era_add_tool"} <= names

        # a call with progress
        progress: list[tuple[float, float | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total))

        done = await client.call_tool("up__test_tool_with_progress", {}, progress_callback=on_progress)
        assert not done.is_error
        assert progress == [(0, 100), (50, 100), (100, 100)], "progress"

        # cancellation reaches the upstream
        before, sleeping = gateway.cancellations(), gateway.sleeps_started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "up__era_sleep", {"seconds": 600})
            with anyio.fail_after(60):  # cancelled once the upstream is in the call, never before
                while gateway.sleeps_started() == sleeping:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        with anyio.fail_after(60):
            while gateway.cancellations() == before:
                await anyio.sleep(0.05)

        # a resource read
        read = await client.read_resource("mcpgw://up/test://static-text")
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        assert content.text == "This is the content of the static text resource."

        # a prompt
        prompt = await client.get_prompt("up__test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        message = prompt.messages[0].content
        assert isinstance(message, types.TextContent)
        assert message.text == "Prompt with arguments: arg1='a', arg2='b'"

        # a list change: a tool the upstream adds shows up in the gateway's listing
        added = f"added_{client_era[:4]}_{client_era[5:7]}".replace("-", "_")
        await client.call_tool("up__era_add_tool", {"name": added})
        with anyio.fail_after(60):
            while f"up__{added}" not in {t.name for t in (await client.list_tools()).tools}:
                await anyio.sleep(0.1)


@pytest.mark.parametrize("cell", [pytest.param(c, id=cell_id(c)) for c in CELLS])
async def test_cell_elicitation(cell: tuple[str, str, str], gateways: dict[tuple[str, str], Gateway]) -> None:
    client_era, upstream_era, transport = cell
    asked: list[str] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "42"})

    async with pinned_client(
        gateways[(upstream_era, transport)].url, client_era, elicitation_callback=answer
    ) as client:
        result = await client.call_tool("up__era_ask", {"question": "The answer?"})
        assert asked == ["The answer?"]
        text = result.content[0]
        assert isinstance(text, types.TextContent)
        assert text.text == 'accept: {"answer": "42"}'
