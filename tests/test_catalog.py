"""Exposed names: the 64-character rule, collisions reported with their fix, aliases, reversible URIs."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import SERVERS, write_registry
from mcpgw.catalog import Catalog, expose_uri, split_uri
from mcpgw.catalog.personas import full_view
from mcpgw.cli import cli
from mcpgw.core.gateway import Gateway
from mcpgw.errors import NotFound
from parity import TestUpstream, registry, served

pytestmark = pytest.mark.anyio

LONG = "n" * 58  # "<58>__echo" is 64 characters; "<58>__image" is 65


async def catalog_of(servers: dict[str, dict[str, Any]]) -> Gateway:
    """The gateway's catalog of `servers` (registry entries), each served by our test upstream in
    memory: naming is the catalog's business, the same whatever the transport."""
    async with served(registry(servers), {name: TestUpstream() for name in servers}, audit=None) as gateway:
        return gateway


async def test_names_over_64_characters_are_withheld_and_reported_with_the_fix() -> None:
    gateway = await catalog_of({"up": {"namespace": LONG}})
    names = {t["name"] for t in gateway.catalog.tools}
    assert f"{LONG}__echo" in names
    assert f"{LONG}__image" not in names
    problem = next(p for p in gateway.catalog.problems if p.name == "image")
    assert "65 characters (max 64)" in problem.message
    assert 'aliases = { "image" = "<short_name>" }' in problem.fix and "[servers.up]" in problem.fix


async def test_an_alias_fixes_a_long_name() -> None:
    entry = {"namespace": LONG, "aliases": {"image": "up_image", "audio": "up_audio"}}
    gateway = await catalog_of({"up": entry})
    names = {t["name"] for t in gateway.catalog.tools}
    assert {"up_image", "up_audio"} <= names
    assert gateway.catalog.tool("up_image").name == "image"


async def test_collisions_are_reported_and_the_first_server_keeps_the_name() -> None:
    gateway = await catalog_of(
        {
            "a": {"namespace": ""},
            "b": {"aliases": {"pid": "echo"}},
        }
    )
    assert gateway.catalog.tool("echo").upstream.name == "a"
    assert gateway.catalog.tool("b__echo").upstream.name == "b"
    collision = [p for p in gateway.catalog.problems if p.server == "b" and p.name == "pid"]
    assert collision and "already taken by a" in collision[0].message


async def test_unprefixed_servers_keep_their_names_and_uris() -> None:
    gateway = await catalog_of({"bare": {"namespace": ""}})
    assert "echo" in {t["name"] for t in gateway.catalog.tools}
    assert [r["uri"] for r in gateway.catalog.resources] == ["test://static"]
    assert gateway.catalog.resource("test://items/7").name == "test://items/7"


async def test_unknown_names_raise_not_found() -> None:
    gateway = await catalog_of({"up": {}})
    for lookup in (
        lambda: gateway.catalog.tool("up__nope"),
        lambda: gateway.catalog.prompt("nope"),
        lambda: gateway.catalog.resource("mcpgw://other/x://y"),
    ):
        with pytest.raises(NotFound):
            lookup()


def test_input_schema_follows_the_listing_as_it_changes() -> None:
    """The HTTP `Mcp-Param-*` check reads a tool's schema by name on every call (indexed): a tool
    added, replaced, renamed or removed in the listing (a mutable list) is seen at once."""

    def tool(name: str, title: str) -> dict[str, Any]:
        return {"name": name, "inputSchema": {"type": "object", "title": title}}

    catalog = Catalog(tools=[tool("a", "a1"), tool("b", "b1"), tool("a", "a-later")])
    view = full_view(catalog)
    assert view.input_schema("a") == {"type": "object", "title": "a1"}  # the first of a name, as listed
    assert view.input_schema("c") is None
    catalog.tools.append(tool("c", "c1"))
    assert view.input_schema("c") == {"type": "object", "title": "c1"}
    catalog.tools[0] = tool("a", "a2")
    assert view.input_schema("a") == {"type": "object", "title": "a2"}
    catalog.tools[1] = tool("d", "d1")  # renamed in place: the same length
    assert view.input_schema("b") is None
    assert view.input_schema("d") == {"type": "object", "title": "d1"}
    del catalog.tools[0]
    assert view.input_schema("a") == {"type": "object", "title": "a-later"}
    catalog.tools[1]["inputSchema"] = "not an object"
    assert view.input_schema("a") is None


def test_uri_rewriting_is_reversible() -> None:
    for uri in ("file:///etc/hosts", "test://items/{id}", "https://example.com/a?b=c#d", "demo://x/y/z"):
        assert split_uri(expose_uri("ns", uri)) == ("ns", uri)
    assert expose_uri("", "file:///x") == "file:///x"
    assert split_uri("file:///x") is None


def test_list_servers_check_shows_name_problems(tmp_path: Any) -> None:
    # tiny.py (standard library, starts in milliseconds): "<58>__sleep" and "<58>__block" are 65 long
    tiny = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
    path = write_registry(tmp_path / "servers.toml", {"up": {**tiny, "namespace": LONG}})
    result = CliRunner().invoke(cli, ["list-servers", "-c", str(path), "--check"])
    assert result.exit_code == 0, result.output
    assert "65 characters (max 64)" in result.output
    assert "aliases" in result.output
