"""The official reference servers, as published, against the snapshots the poisoning tests read.

tests/fixtures/reference_servers/*.json hold what seven official servers list (npm
@modelcontextprotocol/server-everything, -filesystem, -memory, -sequential-thinking; PyPI
mcp-server-fetch, -git, -time), each naming its package, version and command. The poisoning
thresholds are tuned so that none of them is flagged (tests/test_poisoning.py). This test starts
each published package at that version and checks that it still lists exactly the snapshot, so
the tuning is checked against the real descriptions, not a copy that drifted.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import TOOLS_DIR, _npm_install, pip_install
from mcpgw.security.poisoning import scan_lists

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures" / "reference_servers"
LISTS = ("tools", "prompts", "resources", "resource_templates")


def snapshot(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{stem}.json").read_text(encoding="utf-8"))
    return data


def command(stem: str, work: Path) -> list[str]:
    """How the snapshot says the package was started, with this machine's paths."""
    source = snapshot(stem)["source"]
    package = source["package"]
    if source["registry"] == "npm":
        script = npm_servers() / "node_modules" / package / "dist" / "index.js"
        args = source["command"].split()[2:]
        return ["node", str(script), *(str(work) if arg == "/tmp/repo" else arg for arg in args)]
    prefix = pypi_servers()
    args = source["command"].split()[1:]
    return [str(prefix / "bin" / package), *(str(work) if arg == "/tmp/repo" else arg for arg in args)]


STEMS = sorted(path.stem for path in FIXTURES.glob("*.json"))
NPM_PACKAGES = sorted(
    snapshot(s)["source"]["package"] for s in STEMS if snapshot(s)["source"]["registry"] == "npm"
)
PYPI_VERSIONS = {
    snapshot(s)["source"]["package"]: snapshot(s)["source"]["version"]
    for s in STEMS
    if snapshot(s)["source"]["registry"] == "pypi"
}


def npm_servers() -> Path:
    """The npm reference servers, installed once (`tests/tools.py` installs them before the suite), at
    the one version their snapshots were taken of."""
    (version,) = {
        snapshot(s)["source"]["version"] for s in STEMS if snapshot(s)["source"]["registry"] == "npm"
    }
    return _npm_install(TOOLS_DIR / "reference-servers", *(f"{p}@{version}" for p in NPM_PACKAGES))


def pypi_servers() -> Path:
    """The PyPI reference servers' environment, made once (`tests/tools.py` too)."""
    return pip_install(
        TOOLS_DIR / "reference-servers-py", *(f"{p}=={PYPI_VERSIONS[p]}" for p in PYPI_VERSIONS)
    )


async def _never(*args: Any) -> Any:
    raise AssertionError("listing asks the client nothing")


async def listed(argv: list[str], work: Path) -> dict[str, Any]:
    """The four lists, as a client declaring sampling, elicitation and roots sees them."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "MEMORY_FILE_PATH": str(work / "memory.jsonl")}
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(work))
    async with Client(
        params,
        mode="legacy",
        cache=None,
        sampling_callback=_never,
        elicitation_callback=_never,
        list_roots_callback=_never,
    ) as client:

        def dump(items: list[Any]) -> list[Any]:
            return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items]

        capabilities = client.server_capabilities
        lists: dict[str, Any] = {"tools": dump((await client.list_tools()).tools)}
        lists["prompts"] = dump((await client.list_prompts()).prompts) if capabilities.prompts else []
        has_resources = capabilities.resources is not None
        lists["resources"] = dump((await client.list_resources()).resources) if has_resources else []
        templates = (await client.list_resource_templates()).resource_templates if has_resources else []
        lists["resource_templates"] = dump(templates)
        return lists


@pytest.mark.parametrize("stem", STEMS)
async def test_the_published_server_lists_its_snapshot(stem: str, tmp_path: Path) -> None:
    argv = await anyio.to_thread.run_sync(command, stem, tmp_path)
    if stem == "mcp-server-git":
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    with anyio.fail_after(120):
        live = await listed(argv, tmp_path)
    saved = snapshot(stem)
    for name in LISTS:
        assert live[name] == saved.get(name, []), f"{stem} {name} differ from the snapshot"
    assert scan_lists(stem, live) == []  # and so, as published, it is not flagged
