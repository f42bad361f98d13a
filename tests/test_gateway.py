"""The gateway as a client sees it: every check runs directly against the upstream and through mcpgw.

Parity: a call through the gateway gives the same result as the same call made
directly, in both client eras, with the upstream over stdio and over HTTP.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import UPSTREAM, gateway_stdio, upstream_server

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # auto negotiates 2026-07-28 with mcpgw; legacy is the 2025-11-25 handshake


def normalise(value: Any) -> Any:
    """A result as JSON, minus what legitimately differs per hop: protocol stamps and URI prefixes."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(by_alias=True, mode="json", exclude_none=True)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("ttlMs", "cacheScope", "resultType"):
                continue
            if key == "_meta" and isinstance(item, dict):
                item = {k: v for k, v in item.items() if not k.startswith("io.modelcontextprotocol/")}
                if not item:
                    continue
            if key in ("uri", "uriTemplate") and isinstance(item, str) and item.startswith("mcpgw://"):
                item = item.split("/", 3)[3]
            out[key] = normalise(item)
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


@asynccontextmanager
async def both(upstream: dict[str, Any], config: Path, mode: str) -> AsyncIterator[tuple[Client, Client]]:
    """A direct client of the upstream and a client of mcpgw serving it as `up`."""
    if "url" in upstream:
        direct_cm = Client(upstream["url"], mode=mode, cache=None)  # type: ignore[arg-type]
    else:
        from conftest import direct_stdio

        direct_cm = direct_stdio(upstream, mode=mode)
    async with direct_cm as direct, gateway_stdio(config, mode=mode) as gateway:
        yield direct, gateway


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"message": "héllo ✓"}),
    ("add", {"a": 2, "b": 40}),
    ("image", {}),
    ("audio", {}),
    ("mixed", {}),
    ("fail", {"reason": "on purpose"}),
    ("echo", {}),  # invalid arguments: the upstream's own validation error, relayed
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_parity_direct_versus_gateway(
    mode: str, transport: str, registry_file: Any, http_upstream: str
) -> None:
    upstream = upstream_server() if transport == "stdio" else {"url": http_upstream}
    config = registry_file({"up": upstream})
    async with both(upstream, config, mode) as (direct, gateway):
        direct_tools = {t.name: normalise(t) for t in (await direct.list_tools()).tools}
        gateway_tools = {t.name: normalise(t) for t in (await gateway.list_tools()).tools}
        assert {f"up__{name}" for name in direct_tools} == set(gateway_tools)
        for name, tool in direct_tools.items():
            assert gateway_tools[f"up__{name}"] == {**tool, "name": f"up__{name}"}

        for name, arguments in CALLS:
            expected = normalise(await direct.call_tool(name, arguments))
            got = normalise(await gateway.call_tool(f"up__{name}", arguments))
            assert got == expected, name

        seen: dict[str, list[float]] = {"direct": [], "gateway": []}

        async def on_direct(progress: float, total: float | None, message: str | None) -> None:
            seen["direct"].append(progress)

        async def on_gateway(progress: float, total: float | None, message: str | None) -> None:
            seen["gateway"].append(progress)

        expected = normalise(await direct.call_tool("slow", {"steps": 4}, progress_callback=on_direct))
        got = normalise(await gateway.call_tool("up__slow", {"steps": 4}, progress_callback=on_gateway))
        assert got == expected
        assert seen["gateway"] == seen["direct"] == [1.0, 2.0, 3.0, 4.0]

        resources = (await gateway.list_resources()).resources
        assert [r.uri for r in resources] == ["mcpgw://up/test://static"]
        assert normalise(await gateway.read_resource("mcpgw://up/test://static")) == normalise(
            await direct.read_resource("test://static")
        )
        templates = (await gateway.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["mcpgw://up/test://items/{item_id}"]
        assert normalise(await gateway.read_resource("mcpgw://up/test://items/42")) == normalise(
            await direct.read_resource("test://items/42")
        )
        assert [p.name for p in (await gateway.list_prompts()).prompts] == ["up__greet"]
        assert normalise(await gateway.get_prompt("up__greet", {"name": "Ann"})) == normalise(
            await direct.get_prompt("greet", {"name": "Ann"})
        )


@pytest.mark.parametrize("mode", MODES)
async def test_resource_links_in_results_are_readable_through_the_gateway(
    mode: str, registry_file: Any
) -> None:
    config = registry_file({"up": upstream_server()})
    async with gateway_stdio(config, mode=mode) as gateway:
        result = await gateway.call_tool("up__mixed", {})
        link = next(c for c in result.content if c.type == "resource_link")
        assert link.uri == "mcpgw://up/test://static"
        read = await gateway.read_resource(link.uri)
        assert read.contents[0].text == "static text"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_names_get_a_clear_error(mode: str, registry_file: Any) -> None:
    config = registry_file({"up": upstream_server()})
    async with gateway_stdio(config, mode=mode) as gateway:
        with pytest.raises(MCPError) as caught:
            await gateway.call_tool("up__does_not_exist", {})
        assert caught.value.error.code == -32602
        assert "Unknown tool: up__does_not_exist" in caught.value.error.message
        with pytest.raises(MCPError, match="Unknown prompt: nope"):
            await gateway.get_prompt("nope", {})
        with pytest.raises(MCPError, match="Unknown resource"):
            await gateway.read_resource("mcpgw://nobody/test://static")
        with pytest.raises(MCPError, match="Unknown resource"):
            await gateway.read_resource("file:///etc/passwd")
        # the session is still fine afterwards
        assert (await gateway.call_tool("up__echo", {"message": "still here"})).content[
            0
        ].text == "still here"  # type: ignore[union-attr]


async def test_two_upstreams_one_catalog_and_the_same_tool_name_in_each(registry_file: Any) -> None:
    config = registry_file({"a": upstream_server("--name", "A"), "b": upstream_server("--name", "B")})
    async with gateway_stdio(config) as gateway:
        names = [t.name for t in (await gateway.list_tools()).tools]
        assert names[:11] == [n for n in names if n.startswith("a__")]
        assert {n.split("__", 1)[1] for n in names if n.startswith("b__")} == {
            n.split("__", 1)[1] for n in names if n.startswith("a__")
        }
        pid_a = (await gateway.call_tool("a__pid", {})).structured_content
        pid_b = (await gateway.call_tool("b__pid", {})).structured_content
        assert pid_a != pid_b


async def test_timeout_is_reported_and_cancelled_upstream(registry_file: Any, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled.txt"
    config = registry_file(
        {
            "slow": {**upstream_server(), "timeout": 0.5, "env": {"UPSTREAM_CANCEL_MARKER": str(marker)}},
            "fast": upstream_server(),
        }
    )
    async with gateway_stdio(config) as gateway:
        # Up first: under load, start-up alone can outlast 0.5 s, and a call that times out
        # before it is sent leaves nothing for the upstream to cancel.
        await gateway.call_tool("slow__echo", {"message": "warm"})
        started = anyio.current_time()
        with pytest.raises(MCPError) as caught:
            await gateway.call_tool("slow__sleep", {"seconds": 10})
        assert anyio.current_time() - started < 5
        assert (
            "upstream 'slow'" in caught.value.error.message
            and "timed out after 0.5s" in caught.value.error.message
        )
        with anyio.fail_after(5):
            while not marker.exists():
                await anyio.sleep(0.05)
        assert (await gateway.call_tool("fast__echo", {"message": "ok"})).content[0].text == "ok"  # type: ignore[union-attr]
        assert (await gateway.call_tool("slow__echo", {"message": "ok"})).content[0].text == "ok"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_downstream_cancellation_reaches_the_upstream(
    mode: str, registry_file: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled.txt"
    config = registry_file({"up": {**upstream_server(), "env": {"UPSTREAM_CANCEL_MARKER": str(marker)}}})
    async with gateway_stdio(config, mode=mode) as gateway:
        await gateway.call_tool("up__echo", {"message": "warm"})  # the upstream is up before we cancel
        with anyio.move_on_after(1.5):
            await gateway.call_tool("up__sleep", {"seconds": 30})
        with anyio.fail_after(10):
            while not marker.exists():
                await anyio.sleep(0.05)
        assert (await gateway.call_tool("up__echo", {"message": "after"})).content[0].text == "after"  # type: ignore[union-attr]


async def test_list_change_is_announced_to_handshake_clients(registry_file: Any) -> None:
    config = registry_file({"up": upstream_server()})
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    async with gateway_stdio(config, mode="legacy", message_handler=on_message) as gateway:
        assert "up__fresh" not in [t.name for t in (await gateway.list_tools()).tools]
        await gateway.call_tool("up__grow", {"tool_name": "fresh"})
        with anyio.fail_after(5):
            await changed.wait()
        assert "up__fresh" in [t.name for t in (await gateway.list_tools()).tools]
        assert (await gateway.call_tool("up__fresh", {})).content[0].text == "added tool"  # type: ignore[union-attr]


async def test_list_change_is_announced_to_stateless_listeners(registry_file: Any) -> None:
    config = registry_file({"up": upstream_server()})
    async with gateway_stdio(config, mode="auto") as gateway:
        assert gateway.protocol_version == "2026-07-28"
        await gateway.list_tools()
        async with gateway.listen(tools_list_changed=True) as subscription:
            await gateway.call_tool("up__grow", {"tool_name": "fresh"})
            with anyio.fail_after(5):
                async for _event in subscription:
                    break
        assert "up__fresh" in [t.name for t in (await gateway.list_tools()).tools]


async def test_roots_come_from_the_registry_entry(registry_file: Any, tmp_path: Path) -> None:
    config = registry_file(
        {"up": {**upstream_server(), "era": "handshake", "roots": [str(tmp_path), "file:///srv/data"]}}
    )
    async with gateway_stdio(config) as gateway:
        result = await gateway.call_tool("up__roots", {})
        assert result.structured_content == {"result": [tmp_path.as_uri(), "file:///srv/data"]}


async def test_era_option_pins_the_upstream_protocol(tmp_path: Path) -> None:
    from mcpgw.config import ServerConfig
    from mcpgw.upstream import Upstream

    for era, expected in (("handshake", "2025-11-25"), ("stateless", "2026-07-28"), ("auto", "2026-07-28")):
        upstream = Upstream(
            "up", ServerConfig(command=sys.executable, args=[str(UPSTREAM)], era=era), timeout=10
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(upstream.run)
            await upstream.wait_settled()
            assert upstream.state == "ready", upstream.error
            assert upstream.protocol_version == expected
            upstream.stop()
