"""Tool names of a public-style spec of realistic size (tests/openapi_big.py: 424 operations, GitHub-
style `area/verb-thing` operationIds, some over 64 characters, some colliding once sanitised, some
missing): all valid and within 64 characters with the namespace, distinct, and stable when the
spec is reordered or grown. Also: a gateway without OpenAPI servers never imports their stack.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import parity
from conftest import modules_after
from mcpgw.config import TOOL_NAME_RE, validate
from mcpgw.errors import ConfigError
from mcpgw.upstream.openapi import names, spec
from openapi_big import big_spec, operation_count

pytestmark = pytest.mark.anyio
DOCUMENT = big_spec()
OPERATIONS = list(spec.operations(DOCUMENT))


def named(operations: list[spec.Operation], namespace: str) -> dict[tuple[str, str], str]:
    return names.tool_names(operations, budget=names.budget(namespace), key="servers.x.openapi")


@pytest.mark.parametrize("namespace", ["", "gh", "public-api_of-the-company-with-a-long-name"])
def test_every_name_is_valid_distinct_and_fits_the_namespace(namespace: str) -> None:
    tools = named(OPERATIONS, namespace)
    assert len(tools) == operation_count(DOCUMENT) == 424
    assert len(set(tools.values())) == len(tools)
    for name in tools.values():
        exposed = f"{namespace}__{name}" if namespace else name
        assert TOOL_NAME_RE.match(exposed), exposed


def test_names_read_as_their_operation_ids_and_long_ones_are_cut_with_a_tag() -> None:
    tools = named(OPERATIONS, "gh")
    assert tools[("GET", "/issues/{owner}/{repo}/comments")] == "issues_list-comments"
    long = tools[("GET", "/repos/{owner}/{repo}/comments")]
    assert len(long) <= names.budget("gh") and long.startswith("repos_list-comments-for-the-authenticated")
    assert long[-7] == "_" and int(long[-6:], 16) >= 0
    # no operationId: method and path
    assert tools[("DELETE", "/repos/{owner}/{repo}/comments/{id}")] == "delete_repos_owner_repo_comments_id"


def test_collisions_after_sanitising_get_tags_but_an_exact_operation_id_keeps_its_name() -> None:
    tools = named(OPERATIONS, "gh")
    meta = {path: tools[("GET", path)] for path in ("/meta/a", "/meta/b", "/meta/c", "/meta/d")}
    assert meta["/meta/c"] == "meta_get"  # its operationId is exactly `meta_get`
    others = [meta["/meta/a"], meta["/meta/b"], meta["/meta/d"]]
    assert all(name.startswith("meta_get_") and len(name) == len("meta_get_") + 6 for name in others)
    assert len(set(others)) == 3


def test_names_are_stable_when_the_spec_is_reordered_or_grown() -> None:
    tools = named(OPERATIONS, "gh")
    assert named(list(reversed(OPERATIONS)), "gh") == tools
    grown = list(spec.operations(big_spec(90)))
    assert len(grown) > len(OPERATIONS)
    regrown = named(grown, "gh")
    assert {op: regrown[op] for op in tools} == tools


def test_a_namespace_that_leaves_too_little_room_is_refused() -> None:
    with pytest.raises(ConfigError, match="give the server a shorter namespace"):
        named(OPERATIONS, "n" * 55)


async def test_the_big_spec_is_served_whole_without_catalog_problems(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(DOCUMENT))
    entry = {"openapi": str(path), "namespace": "public-api_of-the-company-with-a-long-name"}
    async with parity.served(validate({"servers": {"big": entry}}, source="t"), {}, audit=None) as gw:
        assert gw.upstreams["big"].state == "ready", gw.upstreams["big"].error
        tools = gw.catalog.tools
        assert not gw.catalog.problems
    assert len(tools) == 424
    expected = {f"{entry['namespace']}__{name}" for name in named(OPERATIONS, entry["namespace"]).values()}
    assert {tool["name"] for tool in tools} == expected


def test_a_gateway_without_openapi_servers_does_not_import_their_stack(tmp_path: Path) -> None:
    """fastmcp's OpenAPI stack costs about half a second: only gateways that serve such a server load it."""
    script = """
import sys, anyio
from mcpgw.assembly import build_gateway
from mcpgw.config import validate
registry = validate({"servers": {"t": {"command": sys.executable, "args": ["-c", "pass"]}}}, source="t")
built = build_gateway(registry, audit=None)
async def main():
    async with built.gateway.running():
        await built.gateway.wait_started()
anyio.run(main)
"""
    heavy = {"mcpgw.upstream.openapi", "fastmcp.server.providers.openapi", "yaml"}
    assert not modules_after(script) & heavy


def test_a_reload_that_changes_the_namespace_restarts_an_openapi_server() -> None:
    """Its tool names are cut to what the namespace leaves: a new namespace needs them made again."""
    from mcpgw.config import parse
    from mcpgw.core.reload import Parts, plan

    before = '[servers.api]\nopenapi = "spec.json"\n[servers.cmd]\ncommand = "x"\n'
    after = before.replace('"spec.json"', '"spec.json"\nnamespace = "b"').replace(
        '"x"', '"x"\nnamespace = "c"'
    )
    done = plan(Parts(parse(before, source="t")), Parts(parse(after, source="t")))
    assert (done.restarted, done.retuned) == (("api",), ("cmd",))
