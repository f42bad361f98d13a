"""Personas: what each lists, and that nothing else gets through.

In memory (tests/parity.py) for what a persona lists and lets through; over real HTTP for the
per-persona endpoints, and through the CLI for its commands. The upstream keeps its own record
of every call it receives (`TestUpstream.calls`, `UPSTREAM_CALL_LOG` for a process), so "never
reaches the upstream" is asserted on the upstream's side, not the gateway's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import (
    SERVERS,
    background,
    free_port,
    lite_server,
    mcpgw_command,
    run_mcpgw,
    write_registry,
)
from mcpgw.core.gateway import Gateway
from parity import MODES, TestUpstream, gateway_client, registry, served

pytestmark = pytest.mark.anyio

# For the start-up checks below any server with an `echo` tool will do; this one is standard library
# only, so it starts in milliseconds where a FastMCP upstream takes a CPU second.
TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}

PERSONAS: dict[str, Any] = {
    "default": {"allow": ["up__echo"]},
    "triage": {
        "servers": ["up"],
        "deny": ["up__fail", "up__sleep", "up__secret*"],
        "prompts": {"deny": ["*"]},
        "resources": {"allow": ["mcpgw://up/test://items/*"]},
        "tools": {
            "up__echo": {
                "name": "say",
                "description": "Say one of two words.",
                "narrow": {"message": {"type": "string", "enum": ["hello", "bye"]}},
            },
            "up__add": {"fixed": {"b": 100}},
        },
    },
    "reader": {"read_only": True},
    "ops": {"allow": ["up__pid"]},
    "finder": {"catalog": "search", "deny": ["up__pid", "other__*"]},
}


@pytest.fixture
def calls(tmp_path: Path) -> Path:
    return tmp_path / "upstream-calls.jsonl"


@pytest.fixture
def config(tmp_path: Path, calls: Path) -> Path:
    up = {**lite_server(), "env": {"UPSTREAM_CALL_LOG": str(calls)}}
    path = write_registry(tmp_path / "servers.toml", {"up": up, "other": lite_server("--name", "other")})
    doc = path.read_text()
    import tomlkit

    parsed = tomlkit.parse(doc)
    parsed["personas"] = PERSONAS
    path.write_text(tomlkit.dumps(parsed))
    return path


def upstream_calls(calls: Path) -> list[dict[str, Any]]:
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


@dataclass
class Served:
    """The gateway over `up` and `other` with PERSONAS, in memory; `up` records the calls it receives."""

    gateway: Gateway
    up: TestUpstream

    def client(self, *, persona: str | None = None, mode: str = "auto", **kwargs: Any) -> Any:
        return gateway_client(self.gateway, persona=persona, mode=mode, **kwargs)


@pytest.fixture
async def served_personas() -> AsyncIterator[Served]:
    up, other = TestUpstream(), TestUpstream("other")
    config = registry({"up": {}, "other": {}}, personas=PERSONAS)
    async with served(config, {"up": up, "other": other}) as gateway:
        yield Served(gateway, up)


async def names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def refused(client: Client, name: str, arguments: dict[str, Any] | None = None) -> str:
    with pytest.raises(MCPError) as caught:
        await client.call_tool(name, arguments or {})
    assert caught.value.error.code == -32602
    return caught.value.error.message


@pytest.mark.parametrize("mode", MODES)
async def test_triage_persona(served_personas: Served, mode: str) -> None:
    async with served_personas.client(persona="triage", mode=mode) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert "say" in listed and "up__add" in listed
        assert not {"up__echo", "up__fail", "up__sleep", "other__echo"} & set(listed)

        # overrides as configured: new name and description, hidden fixed argument, narrowed schema
        assert listed["say"].description == "Say one of two words."
        assert listed["say"].input_schema["properties"]["message"]["enum"] == ["hello", "bye"]
        assert "b" not in listed["up__add"].input_schema["properties"]
        assert "b" not in listed["up__add"].input_schema.get("required", [])
        assert (await client.call_tool("say", {"message": "hello"})).content[0].text == "hello"  # type: ignore[union-attr]
        assert "'message'" in await refused(client, "say", {"message": "rm -rf"})
        assert (await client.call_tool("up__add", {"a": 1})).structured_content == {"sum": 101}
        assert "'b' is not accepted" in await refused(client, "up__add", {"a": 1, "b": 5})

        # what the persona cannot list, it cannot call: the error is that of a name that does not exist
        for hidden in ("up__fail", "up__sleep", "up__echo", "other__echo", "up__no_such_tool"):
            assert await refused(client, hidden, {"message": "x"}) == f"Unknown tool: {hidden}"

        # prompts are all denied, resources only through the items template
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError, match="Unknown prompt: up__greet"):
            await client.get_prompt("up__greet", {"name": "x"})
        assert (await client.list_resources()).resources == []
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        assert templates == ["mcpgw://up/test://items/{item_id}"]
        assert "7" in (await client.read_resource("mcpgw://up/test://items/7")).contents[0].text  # type: ignore[union-attr]
        for uri in ("mcpgw://up/test://static", "mcpgw://other/test://items/1", "test://static"):
            with pytest.raises(MCPError, match="Unknown resource"):
                await client.read_resource(uri)

    seen = served_personas.up.calls
    assert [c["name"] for c in seen] == ["echo", "add"]  # nothing refused ever reached the upstream
    assert seen[1]["arguments"] == {"a": 1, "b": 100}


async def test_read_only_persona_follows_annotations(served_personas: Served) -> None:
    async with served_personas.client(persona="reader") as client:
        assert await names(client) == {"up__echo", "up__add", "other__echo", "other__add"}
        assert await refused(client, "up__grow", {"tool_name": "x"}) == "Unknown tool: up__grow"


async def test_default_persona_applies_when_none_is_chosen(served_personas: Served) -> None:
    async with served_personas.client() as client:
        assert await names(client) == {"up__echo"}


async def test_upstream_list_changes_are_filtered_before_they_are_announced(served_personas: Served) -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    async with served_personas.client(persona="triage", mode="legacy", message_handler=on_message) as c:
        await c.call_tool("up__grow", {"tool_name": "secret_admin"})
        await c.call_tool("up__grow", {"tool_name": "public_helper"})
        with anyio.fail_after(30):
            await changed.wait()
        with anyio.fail_after(30):
            while "up__public_helper" not in await names(c):
                await anyio.sleep(0.05)
        assert "up__secret_admin" not in await names(c)
        assert await refused(c, "up__secret_admin") == "Unknown tool: up__secret_admin"


async def test_search_mode(served_personas: Served) -> None:
    async with served_personas.client(persona="finder") as client:
        assert await names(client) == {"search_tools", "call_tool"}
        found = await client.call_tool("search_tools", {"query": "echo the message back"})
        tools = [t["name"] for t in found.structured_content["tools"]]  # type: ignore[index]
        assert tools[0] == "up__echo"
        pid_search = await client.call_tool("search_tools", {"query": "process id of this upstream"})
        assert "up__pid" not in [t["name"] for t in pid_search.structured_content["tools"]]  # type: ignore[index]
        result = await client.call_tool(
            "call_tool", {"name": "up__echo", "arguments": {"message": "via search"}}
        )
        assert result.content[0].text == "via search"  # type: ignore[union-attr]
        assert await refused(client, "call_tool", {"name": "up__pid"}) == "Unknown tool: up__pid"
        assert await refused(client, "call_tool", {"name": "other__echo", "arguments": {"message": "x"}}) == (
            "Unknown tool: other__echo"
        )
        assert await refused(client, "up__echo", {"message": "x"}) == "Unknown tool: up__echo"
    assert [c["name"] for c in served_personas.up.calls] == ["echo"]


@asynccontextmanager
async def http_gateway(config: Path) -> AsyncIterator[str]:
    port = free_port()
    with background(
        mcpgw_command(
            "serve",
            "--transport",
            "http",
            "--port",
            str(port),
            "--config",
            str(config),
            "--log-level",
            "warning",
        ),
        port=port,
    ):
        yield f"http://127.0.0.1:{port}"


async def test_personas_over_http_share_upstreams_and_unknown_is_404(config: Path, calls: Path) -> None:
    async with http_gateway(config) as base:
        async with (
            Client(f"{base}/personas/triage/mcp", cache=None) as triage,
            Client(f"{base}/personas/reader/mcp", cache=None) as reader,
            Client(f"{base}/personas/ops/mcp", cache=None) as ops,
            Client(f"{base}/mcp", mode="legacy", cache=None) as default,
        ):
            assert "say" in await names(triage)
            assert await names(reader) == {"up__echo", "up__add", "other__echo", "other__add"}
            assert await names(default) == {"up__echo"}
            assert await refused(reader, "up__pid") == "Unknown tool: up__pid"
            pid_via_ops = (await ops.call_tool("up__pid", {})).structured_content
            pid_via_triage = (await triage.call_tool("up__pid", {})).structured_content
            assert pid_via_ops == pid_via_triage  # one upstream process serves both personas
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{base}/personas/nope/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
            )
            assert response.status_code == 404
            assert "unknown persona 'nope'" in response.text
    assert [c["name"] for c in upstream_calls(calls)] == ["pid", "pid"]


def test_unknown_persona_on_the_cli_is_a_clear_error(config: Path) -> None:
    done = run_mcpgw("serve", "--config", str(config), "--persona", "nope")
    assert done.returncode == 2
    assert "unknown persona 'nope'" in done.stderr and "triage" in done.stderr


def test_override_of_a_missing_tool_stops_the_start(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "servers.toml", {"up": TINY})
    path.write_text(path.read_text() + '\n[personas.broken.tools.up__nope]\ndescription = "x"\n')
    # stdin stays open, as a client's would: the gateway must stop by itself
    with subprocess.Popen(
        mcpgw_command("serve", "--config", str(path)),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.wait(60) == 2
        assert process.stderr is not None
        stderr = process.stderr.read()
    assert "persona 'broken': override of tool 'up__nope', which does not exist" in stderr
    assert "personas.broken.tools.up__nope" in stderr


def test_rules_that_match_nothing_are_warnings(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "servers.toml", {"up": TINY})
    path.write_text(path.read_text() + '\n[personas.p]\nallow = ["up__echo", "gh__*"]\ndeny = ["nothing"]\n')
    done = run_mcpgw("tools", "--config", str(path), "--persona", "p", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [t["name"] for t in data["tools"]] == ["up__echo"]
    assert "persona 'p': allow rule 'gh__*' matches no tool" in data["problems"]
    assert "persona 'p': deny rule 'nothing' matches no tool" in data["problems"]


def test_persona_naming_an_unknown_server_is_a_config_error(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    path.write_text(path.read_text() + '\n[personas.p]\nservers = ["github"]\n')
    done = run_mcpgw("list-servers", "--config", str(path))
    assert done.returncode == 2
    assert "persona 'p' names server 'github', which is not in [servers]" in done.stderr


def test_personas_command_lists_counts(config: Path) -> None:
    done = run_mcpgw("personas", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["persona"]: row for row in json.loads(done.stdout)["personas"]}
    assert set(rows) == set(PERSONAS)
    assert rows["reader"]["tools"] == 4 and rows["reader"]["read_only"] is True
    assert rows["triage"]["servers"] == ["up"] and rows["triage"]["prompts"] == 0
    assert rows["triage"]["resource_templates"] == 1 and rows["triage"]["overrides"] == 2
    assert rows["finder"]["catalog"] == "search"


def test_install_claude_desktop_with_a_persona(config: Path) -> None:
    done = run_mcpgw("install", "claude-desktop", "--config", str(config), "--persona", "triage")
    assert done.returncode == 0, done.stderr
    args = json.loads(done.stdout)["mcpServers"]["mcpgw"]["args"]
    assert args[-2:] == ["--persona", "triage"]
    done = run_mcpgw("install", "claude-desktop", "--config", str(config), "--persona", "nope")
    assert done.returncode == 2 and "unknown persona 'nope'" in done.stderr


async def test_no_probing_through_completions(served_personas: Served) -> None:
    from mcp_types import PromptReference, ResourceTemplateReference

    async with served_personas.client(persona="triage") as client:
        with pytest.raises(MCPError, match="Unknown prompt: up__greet"):
            await client.complete(
                PromptReference(type="ref/prompt", name="up__greet"), {"name": "name", "value": "A"}
            )
        with pytest.raises(MCPError, match="Unknown resource"):
            await client.complete(
                ResourceTemplateReference(type="ref/resource", uri="mcpgw://other/test://items/{item_id}"),
                {"name": "item_id", "value": "1"},
            )
        allowed = await client.complete(
            ResourceTemplateReference(type="ref/resource", uri="mcpgw://up/test://items/{item_id}"),
            {"name": "item_id", "value": "1"},
        )
        # the upstream's own answer (the twin completes item ids; servers/upstream.py answers none)
        assert allowed.completion.values == ["1", "10"]
    assert served_personas.up.calls == []
