"""Published MCP servers behind mcpgw: `@modelcontextprotocol/server-everything` and `mcp-server-time`.

Every check compares what a client sees through the gateway with what the same
client sees talking to the server directly (parity), in both client eras:
`auto` (which negotiates 2026-07-28 with mcpgw) and `legacy` (the 2025-11-25
`initialize` handshake). server-everything is a handshake-era server, so in
`auto` mode the gateway bridges eras.
"""

from __future__ import annotations

import base64
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import PromptReference
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from conftest import (
    LITE,
    background,
    direct_stdio,
    free_port,
    gateway_stdio,
    lite_server,
    mcpgw_command,
)

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]

EVERYTHING_TOOLS = {
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "gzip-file-as-resource",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-long-running-operation",
    "simulate-research-query",
}
EVERYTHING_PROMPTS = {"simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"}
STATIC_DOC = "demo://resource/static/document/features.md"

# server-everything's HTTP transports listen on every interface; this preload pins them to loopback.
LOOPBACK_PRELOAD = """\
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\\d+$/.test(args[0]))) {
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
"""


ASKING_TOOLS = {"trigger-sampling-request", "trigger-elicitation-request", "trigger-url-elicitation"}
"""server-everything's tools offered only to clients that declare sampling or elicitation."""


def dump(items: Any) -> Any:
    if isinstance(items, list):
        return [dump(item) for item in items]
    return items.model_dump(mode="json", by_alias=True, exclude_none=True)


def exposed(uri: str) -> str:
    return f"mcpgw://everything/{uri}"


def check_era(client: Client, mode: str) -> None:
    if mode == "auto":
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS
    else:
        assert client.protocol_version not in MODERN_PROTOCOL_VERSIONS


async def _never_asked(context: Any, params: Any) -> Any:
    raise AssertionError("listing tools asks nothing")


def everything_entry(node: str, everything_js: str) -> dict[str, Any]:
    return {"command": node, "args": [everything_js, "stdio"]}


# --- server-everything over stdio, both client eras ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_everything_tools_are_listed_namespaced(
    mode: str, registry_file: Any, node: str, everything_js: str
) -> None:
    entry = everything_entry(node, everything_js)
    config = registry_file({"everything": entry})
    # mcpgw declares sampling and elicitation upstream (so it may ask a caller that can answer), so
    # the baseline is a client that declares them too: server-everything then adds the tools that ask.
    answers = {"sampling_callback": _never_asked, "elicitation_callback": _never_asked}
    with anyio.fail_after(30):
        async with (
            direct_stdio(entry, mode=mode, **answers) as direct,
            gateway_stdio(config, mode=mode) as gateway,
        ):
            check_era(gateway, mode)
            direct_tools = {tool.name: tool for tool in (await direct.list_tools()).tools}
            gateway_tools = {tool.name: tool for tool in (await gateway.list_tools()).tools}

    assert set(direct_tools) == EVERYTHING_TOOLS | ASKING_TOOLS
    assert len(gateway_tools) == len(direct_tools)
    assert set(gateway_tools) == {f"everything__{name}" for name in direct_tools}
    assert "everything__echo" in gateway_tools
    for name, tool in direct_tools.items():
        through = gateway_tools[f"everything__{name}"]
        assert through.description == tool.description
        assert through.input_schema == tool.input_schema
        assert through.annotations == tool.annotations


@pytest.mark.parametrize("mode", MODES)
async def test_everything_tool_calls_match_direct(
    mode: str, registry_file: Any, node: str, everything_js: str
) -> None:
    entry = everything_entry(node, everything_js)
    config = registry_file({"everything": entry})
    with anyio.fail_after(30):
        async with direct_stdio(entry, mode=mode) as direct, gateway_stdio(config, mode=mode) as gateway:
            check_era(gateway, mode)
            calls = [
                ("echo", {"message": "hi"}),
                ("get-sum", {"a": 2, "b": 3}),
                ("get-tiny-image", {}),
                ("get-structured-content", {"location": "New York"}),
                ("echo", {}),  # missing argument: server-everything's own isError result, relayed
            ]
            pairs = [
                (await direct.call_tool(name, args), await gateway.call_tool(f"everything__{name}", args))
                for name, args in calls
            ]

    (echo_d, echo_g), (sum_d, sum_g), (img_d, img_g), (struct_d, struct_g), (bad_d, bad_g) = pairs

    assert dump(echo_g.content) == [{"type": "text", "text": "Echo: hi"}]
    assert dump(echo_g.content) == dump(echo_d.content)
    assert not echo_g.is_error

    assert dump(sum_g.content) == [{"type": "text", "text": "The sum of 2 and 3 is 5."}]
    assert dump(sum_g.content) == dump(sum_d.content)

    images_d = [c for c in img_d.content if c.type == "image"]
    images_g = [c for c in img_g.content if c.type == "image"]
    assert len(images_g) == 1
    assert images_g[0].mime_type == images_d[0].mime_type == "image/png"
    assert images_g[0].data == images_d[0].data
    assert base64.b64decode(images_g[0].data).startswith(b"\x89PNG")
    assert dump(img_g.content) == dump(img_d.content)

    assert struct_g.structured_content is not None
    assert struct_g.structured_content == struct_d.structured_content
    assert set(struct_g.structured_content) == {"temperature", "conditions", "humidity"}
    assert dump(struct_g.content) == dump(struct_d.content)

    assert bad_g.is_error and bad_d.is_error
    assert dump(bad_g.content) == dump(bad_d.content)


@pytest.mark.parametrize("mode", MODES)
async def test_everything_resources_and_templates_match_direct(
    mode: str, registry_file: Any, node: str, everything_js: str
) -> None:
    entry = everything_entry(node, everything_js)
    config = registry_file({"everything": entry})
    with anyio.fail_after(30):
        async with direct_stdio(entry, mode=mode) as direct, gateway_stdio(config, mode=mode) as gateway:
            check_era(gateway, mode)
            resources_d = (await direct.list_resources()).resources
            resources_g = (await gateway.list_resources()).resources
            templates_d = (await direct.list_resource_templates()).resource_templates
            templates_g = (await gateway.list_resource_templates()).resource_templates
            static_d = await direct.read_resource(STATIC_DOC)
            static_g = await gateway.read_resource(exposed(STATIC_DOC))
            text_uri, blob_uri = "demo://resource/dynamic/text/3", "demo://resource/dynamic/blob/2"
            text_d = await direct.read_resource(text_uri)
            text_g = await gateway.read_resource(exposed(text_uri))
            blob_d = await direct.read_resource(blob_uri)
            blob_g = await gateway.read_resource(exposed(blob_uri))

    # Listed resources: the same seven documents, each behind the gateway's URI prefix.
    assert len(resources_d) == 7
    assert all(str(r.uri).startswith("demo://resource/static/document/") for r in resources_d)
    assert [str(r.uri) for r in resources_g] == [exposed(str(r.uri)) for r in resources_d]
    assert [(r.name, r.mime_type) for r in resources_g] == [(r.name, r.mime_type) for r in resources_d]

    # A static read through the rewritten URI: same text, URI rewritten back to the gateway's.
    [item_d], [item_g] = static_d.contents, static_g.contents
    assert str(item_g.uri) == exposed(STATIC_DOC)
    assert item_g.mime_type == item_d.mime_type
    assert item_g.text == item_d.text
    assert item_g.text.startswith("# Everything Server - Features")

    # Templates are listed with the prefix; a URI made from one reads through the gateway.
    assert len(templates_d) == 2
    assert [t.uri_template for t in templates_g] == [exposed(t.uri_template) for t in templates_d]
    assert exposed("demo://resource/dynamic/text/{resourceId}") in [t.uri_template for t in templates_g]

    [dyn_d], [dyn_g] = text_d.contents, text_g.contents
    assert str(dyn_g.uri) == exposed(text_uri)
    assert dyn_g.mime_type == dyn_d.mime_type == "text/plain"
    # The text carries the creation time (to the second), so compare what precedes it.
    assert dyn_g.text.startswith("Resource 3: This is a plaintext resource created at ")
    assert dyn_g.text.split(" created at ")[0] == dyn_d.text.split(" created at ")[0]

    [bin_d], [bin_g] = blob_d.contents, blob_g.contents
    assert str(bin_g.uri) == exposed(blob_uri)
    assert bin_g.mime_type == bin_d.mime_type
    decoded_g, decoded_d = base64.b64decode(bin_g.blob).decode(), base64.b64decode(bin_d.blob).decode()
    assert decoded_g.startswith("Resource 2: This is a base64 blob created at ")
    assert decoded_g.split(" created at ")[0] == decoded_d.split(" created at ")[0]


@pytest.mark.parametrize("mode", MODES)
async def test_everything_prompts_match_direct(
    mode: str, registry_file: Any, node: str, everything_js: str
) -> None:
    entry = everything_entry(node, everything_js)
    config = registry_file({"everything": entry})
    with anyio.fail_after(30):
        async with direct_stdio(entry, mode=mode) as direct, gateway_stdio(config, mode=mode) as gateway:
            check_era(gateway, mode)
            prompts_d = {p.name: p for p in (await direct.list_prompts()).prompts}
            prompts_g = {p.name: p for p in (await gateway.list_prompts()).prompts}
            simple_d = await direct.get_prompt("simple-prompt")
            simple_g = await gateway.get_prompt("everything__simple-prompt")
            args = {"city": "Paris", "state": "TX"}
            args_d = await direct.get_prompt("args-prompt", args)
            args_g = await gateway.get_prompt("everything__args-prompt", args)
            res_args = {"resourceType": "Text", "resourceId": "2"}
            res_d = await direct.get_prompt("resource-prompt", res_args)
            res_g = await gateway.get_prompt("everything__resource-prompt", res_args)
            argument = {"name": "department", "value": "E"}
            done_d = await direct.complete(
                PromptReference(type="ref/prompt", name="completable-prompt"), argument
            )
            done_g = await gateway.complete(
                PromptReference(type="ref/prompt", name="everything__completable-prompt"), argument
            )

    assert set(prompts_d) == EVERYTHING_PROMPTS
    assert set(prompts_g) == {f"everything__{name}" for name in EVERYTHING_PROMPTS}
    for name, prompt in prompts_d.items():
        assert dump(prompts_g[f"everything__{name}"].arguments or []) == dump(prompt.arguments or [])

    assert dump(simple_g.messages) == dump(simple_d.messages)
    assert simple_g.messages[0].content.text == "This is a simple prompt without arguments."

    assert dump(args_g.messages) == dump(args_d.messages)
    assert args_g.messages[0].content.text == "What's weather in Paris, TX?"

    # An embedded resource in a prompt comes back under the gateway's URI, so it can be read through it.
    assert dump(res_g.messages[0]) == dump(res_d.messages[0])
    embedded_d, embedded_g = res_d.messages[1].content.resource, res_g.messages[1].content.resource
    assert str(embedded_d.uri) == "demo://resource/dynamic/text/2"
    assert str(embedded_g.uri) == exposed("demo://resource/dynamic/text/2")
    assert embedded_g.text.split(" created at ")[0] == embedded_d.text.split(" created at ")[0]

    # Argument completion of a namespaced prompt is answered by the upstream.
    assert done_g.completion.values == done_d.completion.values == ["Engineering"]


# --- mixed client eras on one HTTP gateway, one upstream session each -----------------------------


def children_running(parent: int, needle: str) -> set[int]:
    """Pids of `parent`'s direct children whose command line contains `needle`."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and needle.encode() in cmdline:
            found.add(int(entry.name))
    return found


async def test_mixed_era_clients_share_upstreams_over_http(
    registry_file: Any, node: str, everything_js: str
) -> None:
    config = registry_file({"everything": everything_entry(node, everything_js), "up": lite_server()})
    port = free_port()
    command = mcpgw_command(
        "serve", "--config", str(config), "--transport", "http", "--port", str(port), "--log-level", "warning"
    )
    url = f"http://127.0.0.1:{port}/mcp"
    with background(command, port=port) as gateway_process, anyio.fail_after(60):
        async with Client(url, mode="legacy", cache=None) as old, Client(url, mode="auto", cache=None) as new:
            check_era(old, "legacy")
            check_era(new, "auto")
            for client in (old, new):
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert {"everything__echo", "everything__get-sum", "up__pid"} <= names
            first_pid = (await old.call_tool("up__pid", {})).structured_content
            assert isinstance(first_pid, dict) and isinstance(first_pid["result"], int)
            everything_before = children_running(gateway_process.pid, everything_js)
            upstream_before = children_running(gateway_process.pid, str(LITE))
            assert len(everything_before) == 1
            assert upstream_before == {first_pid["result"]}

            outcomes: list[tuple[str, int, Any]] = []
            errors: list[Exception] = []

            async def one(client: Client, era: str, i: int) -> None:
                try:
                    if i % 3 == 0:
                        result = await client.call_tool("everything__echo", {"message": f"{era}-{i}"})
                        assert not result.is_error
                        assert dump(result.content) == [{"type": "text", "text": f"Echo: {era}-{i}"}]
                    elif i % 3 == 1:
                        b = 100 if era == "legacy" else 200
                        result = await client.call_tool("everything__get-sum", {"a": i, "b": b})
                        assert not result.is_error
                        assert result.content[0].text == f"The sum of {i} and {b} is {i + b}."
                    else:
                        result = await client.call_tool("up__pid", {})
                        assert not result.is_error
                        outcomes.append((era, i, result.structured_content))
                        return
                    outcomes.append((era, i, "ok"))
                except Exception as exc:  # collected and reported below
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, old, "legacy", i)
                    tg.start_soon(one, new, "auto", i)

            assert not errors, errors
            assert len(outcomes) == 40
            assert {era for era, _, _ in outcomes} == {"legacy", "auto"}
            pids = [value for _, i, value in outcomes if i % 3 == 2]
            assert len(pids) == 2 * len(range(2, 20, 3))
            assert all(pid == first_pid for pid in pids), (first_pid, pids)

            # Neither upstream was re-spawned by either client, or by the switch between eras.
            assert children_running(gateway_process.pid, everything_js) == everything_before
            assert children_running(gateway_process.pid, str(LITE)) == upstream_before
            assert (await new.call_tool("up__pid", {})).structured_content == first_pid


# --- server-everything as an HTTP upstream: streamable HTTP and legacy SSE ------------------------


@pytest.mark.long
@pytest.mark.parametrize(
    ("everything_transport", "path", "registry_transport"),
    [("streamableHttp", "/mcp", None), ("sse", "/sse", "sse")],
    ids=["streamable-http", "sse"],
)
async def test_everything_over_http_upstreams(
    everything_transport: str,
    path: str,
    registry_transport: str | None,
    registry_file: Any,
    node: str,
    everything_js: str,
    tmp_path: Path,
) -> None:
    preload = tmp_path / "loopback.cjs"
    preload.write_text(LOOPBACK_PRELOAD)
    port = free_port()
    entry: dict[str, Any] = {"url": f"http://127.0.0.1:{port}{path}"}
    if registry_transport:
        entry["transport"] = registry_transport
    config = registry_file({"everything": entry})
    command = [node, "--require", str(preload), everything_js, everything_transport]
    with background(command, port=port, env={"PORT": str(port)}), anyio.fail_after(40):
        for mode in MODES:
            async with gateway_stdio(config, mode=mode) as gateway:
                check_era(gateway, mode)
                names = {tool.name for tool in (await gateway.list_tools()).tools}
                # Plus the tools that ask the client: mcpgw declares sampling and elicitation upstream.
                assert names == {f"everything__{name}" for name in EVERYTHING_TOOLS | ASKING_TOOLS}
                result = await gateway.call_tool("everything__echo", {"message": f"via {mode}"})
                assert not result.is_error
                assert dump(result.content) == [{"type": "text", "text": f"Echo: via {mode}"}]
                read = await gateway.read_resource(exposed(STATIC_DOC))
                assert read.contents[0].text.startswith("# Everything Server - Features")


# --- mcp-server-time (PyPI) -----------------------------------------------------------------------


def time_server() -> dict[str, Any]:
    found = shutil.which("mcp-server-time") or shutil.which(
        "mcp-server-time", path=str(Path(sys.executable).parent)
    )
    assert found, "mcp-server-time is not installed in the venv"
    return {"command": found}


@pytest.mark.parametrize("mode", MODES)
async def test_time_server_behind_gateway(mode: str, registry_file: Any) -> None:
    entry = time_server()
    config = registry_file({"time": entry})
    convert = {"source_timezone": "Europe/Paris", "time": "12:30", "target_timezone": "Asia/Tokyo"}
    bad = {"timezone": "Mars/Olympus_Mons"}
    with anyio.fail_after(30):
        async with direct_stdio(entry, mode=mode) as direct, gateway_stdio(config, mode=mode) as gateway:
            check_era(gateway, mode)
            names = {tool.name for tool in (await gateway.list_tools()).tools}
            now = await gateway.call_tool("time__get_current_time", {"timezone": "UTC"})
            bad_g = await gateway.call_tool("time__get_current_time", bad)
            bad_d = await direct.call_tool("get_current_time", bad)
            # The conversion is for "today": bracket the gateway call so a midnight in between cannot fail it.
            before = await direct.call_tool("convert_time", convert)
            through = await gateway.call_tool("time__convert_time", convert)
            after = await direct.call_tool("convert_time", convert)

    assert names == {"time__get_current_time", "time__convert_time"}

    assert not now.is_error
    assert now.structured_content is not None
    assert now.structured_content["timezone"] == "UTC"
    assert now.structured_content["datetime"].endswith("+00:00")

    assert bad_g.is_error is True
    assert dump(bad_g.content) == dump(bad_d.content)
    assert "Mars/Olympus_Mons" in bad_g.content[0].text

    assert not through.is_error
    # mcp-server-time stamps its own serverInfo on 2026-07-28 results; through mcpgw it is mcpgw's.
    stamp = (through.meta or {}).get("io.modelcontextprotocol/serverInfo")
    assert stamp is None or stamp["name"] == "mcpgw"
    if mode == "auto":
        assert stamp is not None
    assert through.structured_content in (before.structured_content, after.structured_content)
    assert dump(through.content) in (dump(before.content), dump(after.content))
    assert through.structured_content["source"]["timezone"] == "Europe/Paris"
    assert through.structured_content["target"]["timezone"] == "Asia/Tokyo"
