"""Prototype-mode listings mark what is served only with a warning (what production would withhold).

`mcpgw tools`, `mcpgw personas` and `mcpgw list-servers --check` run against a
real registry in prototype mode: a pinned server (`tiny.py`: standard library only, so each of the
eight listings starts it in milliseconds, not a FastMCP second) with `echo` changed since its pin
and `sleep` new, the mutable upstream whose `lookup` tool
and `notes://{title}` template trip the poisoning checks (so `pin` left them
out), a server missing from the lock, and a registry with no lock file at all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import tomlkit
from click.testing import CliRunner

from conftest import SERVERS, pin_registry, write_registry
from mcpgw.cli import cli
from mcpgw.security import pins

TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
MUT = {"command": sys.executable, "args": [str(SERVERS / "mutable.py"), "--poison", "--poison-template"]}


@pytest.fixture(scope="module")
def prototype(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prototype registry, pinned, then: `up`'s echo changed, its sleep new, `fresh` unpinned."""
    tmp = tmp_path_factory.mktemp("prototype")
    config = write_registry(tmp / "servers.toml", {"up": TINY, "mut": MUT, "fresh": TINY})
    parsed = tomlkit.parse(config.read_text())
    parsed["personas"] = {"everyone": {}, "uponly": {"servers": ["up"]}}
    config.write_text(tomlkit.dumps(parsed))
    lock_file, lock = pin_registry(config)
    assert "lookup" not in lock["mut"]["tools"], "pin must not pin a flagged item on its own"
    old = json.loads(lock["up"]["tools"]["echo"].definition)
    lock["up"]["tools"]["echo"] = pins.pin_of("tools", {**old, "description": "Echo, as it was pinned."})
    del lock["up"]["tools"]["sleep"], lock["fresh"]
    pins.write_lock(lock_file, lock)
    return config


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout  # the result; progress lines go to stderr


def marked(items: list[dict[str, str]]) -> dict[tuple[str, str], str]:
    return {(item["kind"], item["name"]): item["reason"] for item in items}


def test_prototype_listings_mark_what_production_would_withhold(prototype: Path) -> None:
    config = str(prototype)
    listed = json.loads(run("tools", "--config", config, "--json"))
    names = {tool["name"] for tool in listed["tools"]}
    assert {"up__echo", "up__sleep", "mut__lookup", "fresh__echo"} <= names, "prototype mode serves them"
    assert listed["withheld"] == []
    warned = marked(listed["warned"])
    assert warned[("tool", "up__echo")] == "its definition differs from its pin"
    assert warned[("tool", "up__sleep")] == "it is not pinned (new since the server was pinned)"
    assert warned[("tool", "fresh__echo")] == "its server has no pins"
    assert warned[("tool", "mut__lookup")].startswith("it is not pinned (new since the server was pinned); ")
    assert "poisoning checks flagged it" in warned[("tool", "mut__lookup")]
    assert "poisoning checks flagged it" in warned[("resource template", "mcpgw://mut/notes://{title}")]
    assert ("tool", "up__pid") not in warned and ("tool", "mut__stable") not in warned, "pinned: no mark"

    text = run("tools", "--config", config)
    assert "┃ warning" in text
    echo_row = next(line for line in text.splitlines() if "up__echo " in line)
    assert "its definition" in echo_row
    assert "its" not in next(line for line in text.splitlines() if "up__pid " in line)
    assert "served with warnings: 1 (production mode would withhold these" in text  # the template

    uponly = json.loads(run("tools", "--config", config, "--json", "--persona", "uponly"))
    assert {w["name"] for w in uponly["warned"]} == {"up__echo", "up__sleep"}

    personas = json.loads(run("personas", "--config", config, "--json"))["personas"]
    by_name = {row["persona"]: row for row in personas}
    assert marked(by_name["everyone"]["warned"]) == warned
    assert {w["name"] for w in by_name["uponly"]["warned"]} == {"up__echo", "up__sleep"}
    text = run("personas", "--config", config)
    assert f"{len(warned)} items served with warnings" in text
    # Items with a warning of their own in a table; the blanket "its server has no pins" in one line.
    blanket = [key for key, reason in warned.items() if reason == "its server has no pins"]
    assert blanket and len(blanket) < len(warned)
    assert f"served with warnings: {len(warned) - len(blanket)} (production mode would withhold these" in text
    line = f"served with warnings: {len(blanket)} (production mode would withhold these; "
    assert f"{line}{len(blanket)}: its server has no pins)" in text
    assert "mcpgw personas -c" in text and "--warnings` lists them" in text

    servers = json.loads(run("list-servers", "--config", config, "--check", "--json"))
    counts = {row["name"]: row["warned"] for row in servers["servers"]}
    assert counts == {
        "up": 2,
        "mut": 2,
        "fresh": sum(1 for kind, name in warned if name.startswith("fresh__")),
    }
    assert marked(servers["warned"]) == warned
    assert "served with warnings" in run("list-servers", "--config", config, "--check")


def test_without_a_lock_file_every_item_is_marked(tmp_path: Path) -> None:
    config = str(write_registry(tmp_path / "servers.toml", {"fresh": TINY}))
    listed = json.loads(run("tools", "--config", config, "--json"))
    assert {tool["name"] for tool in listed["tools"]} == {w["name"] for w in listed["warned"]} != set()
    assert {w["reason"] for w in listed["warned"]} == {"there is no lock file"}
    servers = json.loads(run("list-servers", "--config", config, "--check", "--json"))
    assert servers["servers"][0]["warned"] == len(listed["tools"])
