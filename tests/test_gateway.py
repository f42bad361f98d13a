"""The gateway as a client sees it: every check runs directly against the upstream and through mcpgw.

Parity: a call through the gateway gives the same result as the same call made directly, in both
client eras. In memory (tests/parity.py) for request behaviour; over real processes (an upstream
over stdio and over HTTP, `mcpgw serve` over stdio) where the transports are the point.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import UPSTREAM, direct_stdio, gateway_stdio, upstream_server
from parity import (
    MODES,
    Sides,
    TestUpstream,
    both,
    direct_client,
    gateway_client,
    normalise,
    registry,
    served,
)

pytestmark = pytest.mark.anyio

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"message": "héllo ✓"}),
    ("add", {"a": 2, "b": 40}),
    ("image", {}),
    ("audio", {}),
    ("mixed", {}),
    ("fail", {"reason": "on purpose"}),
    ("echo", {}),  # invalid arguments: the upstream's own validation error, relayed
]


async def wait_until(condition: Any, *, timeout: float = 30.0) -> None:
    """Poll `condition()` until it is true; `timeout` only stops a test that would hang."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def parity_scenario(direct: Client, gateway: Client) -> None:
    """The catalog, every content type, structured output, isError, a validation error, progress,
    resources, templates and prompts: through the gateway (as `up`) exactly as directly."""
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
    assert [normalise(r) for r in resources] == [
        normalise(r) for r in (await direct.list_resources()).resources
    ]
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


async def test_parity_direct_versus_gateway(sides: Sides) -> None:
    await parity_scenario(sides.direct, sides.gateway)
    # each call reached the upstream once directly and once through the gateway, never more
    assert [c["name"] for c in sides.upstream.calls] == [n for n, _ in CALLS for _ in (1, 2)] + ["slow"] * 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_parity_over_real_processes(
    mode: str, transport: str, registry_file: Any, request: pytest.FixtureRequest
) -> None:
    """The same scenario with the upstream a real process over stdio or HTTP, and `mcpgw serve` too."""
    # The HTTP upstream is started only where it is used (a FastMCP process is a second of CPU).
    upstream = (
        upstream_server() if transport == "stdio" else {"url": request.getfixturevalue("http_upstream")}
    )
    config = registry_file({"up": upstream})
    if "url" in upstream:
        direct_cm: Any = Client(upstream["url"], mode=mode, cache=None)  # type: ignore[arg-type]
    else:
        direct_cm = direct_stdio(upstream, mode=mode)
    async with direct_cm as direct, gateway_stdio(config, mode=mode) as gateway:
        await parity_scenario(direct, gateway)


@pytest.mark.parametrize("mode", MODES)
async def test_completions_match_the_upstream(mode: str) -> None:
    async with both(mode) as (direct, gateway):
        for argument, prompt in (("name", "A"), ("name", "B"), ("name", "Z")):
            expected = await direct.complete(
                types.PromptReference(type="ref/prompt", name="greet"), {"name": argument, "value": prompt}
            )
            got = await gateway.complete(
                types.PromptReference(type="ref/prompt", name="up__greet"),
                {"name": argument, "value": prompt},
            )
            assert normalise(got) == normalise(expected)
        expected = await direct.complete(
            types.ResourceTemplateReference(type="ref/resource", uri="test://items/{item_id}"),
            {"name": "item_id", "value": "1"},
        )
        got = await gateway.complete(
            types.ResourceTemplateReference(type="ref/resource", uri="mcpgw://up/test://items/{item_id}"),
            {"name": "item_id", "value": "1"},
        )
        assert normalise(got) == normalise(expected)
        assert got.completion.values == ["1", "10"]


@pytest.mark.parametrize("mode", MODES)
async def test_the_gateway_stamps_its_own_server_info(mode: str) -> None:
    """What the normalisation drops is the gateway's own: its name in `_meta`, never the upstream's."""
    async with both(mode) as (_, gateway):
        result = await gateway.call_tool("up__echo", {"message": "x"})
        stamp = (result.meta or {}).get("io.modelcontextprotocol/serverInfo")
        assert stamp is None or stamp["name"] == "mcpgw"
        assert gateway.server_info is None or gateway.server_info.name == "mcpgw"


@pytest.mark.parametrize("mode", MODES)
async def test_resource_links_in_results_are_readable_through_the_gateway(mode: str) -> None:
    async with both(mode) as (_, gateway):
        result = await gateway.call_tool("up__mixed", {})
        link = next(c for c in result.content if c.type == "resource_link")
        assert link.uri == "mcpgw://up/test://static"
        read = await gateway.read_resource(link.uri)
        assert read.contents[0].text == "static text"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_names_get_a_clear_error(mode: str) -> None:
    async with both(mode) as (_, gateway):
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


async def test_two_upstreams_one_catalog_and_the_same_tool_name_in_each() -> None:
    a, b = TestUpstream("A"), TestUpstream("B")
    async with served(registry({"a": {}, "b": {}}), {"a": a, "b": b}) as gw, gateway_client(gw) as gateway:
        names = [t.name for t in (await gateway.list_tools()).tools]
        assert names[:11] == [n for n in names if n.startswith("a__")]
        assert {n.split("__", 1)[1] for n in names if n.startswith("b__")} == {
            n.split("__", 1)[1] for n in names if n.startswith("a__")
        }
        pid_a = (await gateway.call_tool("a__pid", {})).structured_content
        pid_b = (await gateway.call_tool("b__pid", {})).structured_content
        assert pid_a != pid_b
    assert [c["name"] for c in a.calls] == [c["name"] for c in b.calls] == ["pid"]


async def test_timeout_is_reported_and_cancelled_upstream() -> None:
    slow, fast = TestUpstream(), TestUpstream()
    config = registry({"slow": {"timeout": 0.5}, "fast": {}})
    async with served(config, {"slow": slow, "fast": fast}) as gw, gateway_client(gw) as gateway:
        started = anyio.current_time()
        with pytest.raises(MCPError) as caught:
            await gateway.call_tool("slow__sleep", {"seconds": 600})
        # the gateway answered long before the upstream would have: it did not wait the call out
        assert anyio.current_time() - started < 300
        assert (
            "upstream 'slow'" in caught.value.error.message
            and "timed out after 0.5s" in caught.value.error.message
        )
        with anyio.fail_after(30):
            await slow.cancelled.wait()
        assert (await gateway.call_tool("fast__echo", {"message": "ok"})).content[0].text == "ok"  # type: ignore[union-attr]
        assert (await gateway.call_tool("slow__echo", {"message": "ok"})).content[0].text == "ok"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("link", ["wire", "dispatch"])
async def test_downstream_cancellation_reaches_the_upstream(mode: str, link: Any) -> None:
    upstream = TestUpstream()
    async with (
        served(registry(), {"up": upstream}) as gw,
        gateway_client(gw, mode=mode, link=link) as gateway,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(gateway.call_tool, "up__sleep", {"seconds": 600})
            await wait_until(lambda: any(c["name"] == "sleep" for c in upstream.calls))
            tg.cancel_scope.cancel()
        with anyio.fail_after(30):
            await upstream.cancelled.wait()
        assert (await gateway.call_tool("up__echo", {"message": "after"})).content[0].text == "after"  # type: ignore[union-attr]


async def test_list_change_is_announced_to_handshake_clients() -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    async with (
        served(registry(), {"up": TestUpstream()}) as gw,
        gateway_client(gw, mode="legacy", message_handler=on_message) as gateway,
    ):
        assert "up__fresh" not in [t.name for t in (await gateway.list_tools()).tools]
        await gateway.call_tool("up__grow", {"tool_name": "fresh"})
        with anyio.fail_after(30):
            await changed.wait()
        assert "up__fresh" in [t.name for t in (await gateway.list_tools()).tools]
        assert (await gateway.call_tool("up__fresh", {})).content[0].text == "added tool"  # type: ignore[union-attr]


async def test_list_change_is_announced_to_stateless_listeners() -> None:
    async with served(registry(), {"up": TestUpstream()}) as gw, gateway_client(gw, mode="auto") as gateway:
        assert gateway.protocol_version == "2026-07-28"
        await gateway.list_tools()
        async with gateway.listen(tools_list_changed=True) as subscription:
            await gateway.call_tool("up__grow", {"tool_name": "fresh"})
            with anyio.fail_after(30):
                async for _event in subscription:
                    break
        assert "up__fresh" in [t.name for t in (await gateway.list_tools()).tools]


async def test_roots_come_from_the_registry_entry(tmp_path: Path) -> None:
    config = registry({"up": {"era": "handshake", "roots": [str(tmp_path), "file:///srv/data"]}})
    async with served(config, {"up": TestUpstream()}) as gw, gateway_client(gw) as gateway:
        result = await gateway.call_tool("up__roots", {})
        assert result.structured_content == {"result": [tmp_path.as_uri(), "file:///srv/data"]}


@pytest.mark.parametrize("mode", MODES)
async def test_direct_baseline_is_the_upstream_itself(mode: str) -> None:
    """The baseline the parity tests compare with: a client of the same object the gateway serves."""
    upstream = TestUpstream()
    async with direct_client(upstream, mode=mode) as direct:
        assert (await direct.call_tool("echo", {"message": "x"})).content[0].text == "x"  # type: ignore[union-attr]
    assert upstream.calls == [{"name": "echo", "arguments": {"message": "x"}}]


async def test_era_option_pins_the_upstream_protocol() -> None:
    from mcpgw.config import StdioServer
    from mcpgw.upstream import Upstream

    for era, expected in (("handshake", "2025-11-25"), ("stateless", "2026-07-28"), ("auto", "2026-07-28")):
        upstream = Upstream(
            "up",
            StdioServer(command="in-process", era=era),
            timeout=30,
            in_process=TestUpstream().server,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(upstream.run)
            await upstream.wait_settled()
            assert upstream.state == "ready", upstream.error
            assert upstream.protocol_version == expected
            upstream.stop()


async def test_era_option_pins_the_protocol_of_a_real_process() -> None:
    """The same over stdio, where negotiation crosses a real process boundary."""
    from mcpgw.config import StdioServer
    from mcpgw.upstream import Upstream

    for era, expected in (("handshake", "2025-11-25"), ("stateless", "2026-07-28"), ("auto", "2026-07-28")):
        upstream = Upstream(
            "up", StdioServer(command=sys.executable, args=[str(UPSTREAM)], era=era), timeout=60
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(upstream.run)
            await upstream.wait_settled()
            assert upstream.state == "ready", upstream.error
            assert upstream.protocol_version == expected
            upstream.stop()


async def test_progress_reaches_an_in_process_client_of_the_2026_era() -> None:
    """`Client(build_server(gateway)[0])` in a 2026-07-28 mode, as an embedder would connect."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with (
        served(registry(), {"up": TestUpstream()}) as gw,
        gateway_client(gw, mode="auto", link="dispatch") as gateway,
    ):
        await gateway.call_tool("up__slow", {"steps": 2}, progress_callback=on_progress)
    assert seen == [1.0, 2.0]
