"""The official MCP conformance suite's server scenarios, against our fixture directly and through mcpgw.

The suite (npm `@modelcontextprotocol/conformance`, which needs Node 22) is
installed by the test run itself into `.tools/conformance`, next to the Node 22
binary the `node22` fixture installs. The fixture (tests/servers/conformance.py)
reproduces the suite's reference server, on its handshake path and on its
stateless 2026-07-28 path, including what the reference omits or gets wrong.

Each run is one era pair: the scenarios a spec revision requires
(`--requirements 2025-11-25` or `2026-07-28`, which also runs the unscored
extension and pending scenarios), against an upstream of both eras (the
fixture as the reference is) or of the handshake era only (`--protocol
2025-11-25`, so mcpgw falls back to `initialize`). Every run goes directly to
the upstream and through `mcpgw serve --transport http` in its default
configuration (the registry entry sets only `namespace = ""`).

`tests/conformance-expected-failures.yml` lists, per run, the scenarios that
fail and the cause of each; a scenario that fails unlisted fails the test, and
so does a listed one that passes (a stale entry). Through mcpgw a scenario may
fail where it passes directly only with a cause that says why.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SERVERS, background, free_port, mcpgw_command, write_registry

FIXTURE = SERVERS / "conformance.py"
EXPECTED = Path(__file__).resolve().parent / "conformance-expected-failures.yml"
SUITE_TIMEOUT = 600
"""Seconds one requirement set may take: a hang guard only (a run takes tens of seconds)."""

UPSTREAMS = {"both-eras": [], "handshake-only": ["--protocol", "2025-11-25"]}
PAIRS = [("2025-11-25", "both-eras"), ("2026-07-28", "both-eras"), ("2025-11-25", "handshake-only")]
"""(requirement set, upstream) pairs. A handshake-only upstream cannot serve the 2026-07-28 set directly."""


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], str]]:
    """(upstream, side) -> URL: each upstream kind directly, and through a default-configured mcpgw."""
    urls: dict[tuple[str, str], str] = {}
    with ExitStack() as processes:
        for upstream, extra in UPSTREAMS.items():
            port = free_port()
            command = [sys.executable, str(FIXTURE), "--http", str(port), *extra]
            processes.enter_context(background(command, port=port))
            urls[upstream, "direct"] = f"http://127.0.0.1:{port}/mcp"
            folder = tmp_path_factory.mktemp(f"conformance-{upstream}")
            entry = {"url": urls[upstream, "direct"], "namespace": ""}
            config = write_registry(folder / "servers.toml", {"fixture": entry})
            port = free_port()
            command = mcpgw_command(
                "serve", "--config", str(config), "--transport", "http", "--port", str(port)
            )
            env = {"MCPGW_AUDIT_DB": str(folder / "audit.db")}
            processes.enter_context(background([*command, "--log-level", "warning"], port=port, env=env))
            urls[upstream, "mcpgw"] = f"http://127.0.0.1:{port}/mcp"
        yield urls


def run_key(requirements: str, upstream: str, side: str) -> str:
    return f"{requirements} {upstream} {side}"


def expected_failures(key: str) -> dict[str, str]:
    loaded = yaml.safe_load(EXPECTED.read_text()) or {}
    entries = loaded.get(key) or {}
    assert isinstance(entries, dict), f"{EXPECTED}: '{key}' maps scenario names to causes"
    for scenario, cause in entries.items():
        assert isinstance(cause, str) and cause.strip(), f"{EXPECTED}: '{key}'.{scenario} needs its cause"
    return entries


def scenario_outcomes(output: Path) -> dict[str, bool]:
    """Scenario name -> passed, from the suite's `-o` folder (a WARNING counts as a failure, as in the
    suite's own baseline check)."""
    outcomes: dict[str, bool] = {}
    for checks_file in sorted(output.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks_file.parent.name.removeprefix("server-"))
        checks: list[dict[str, Any]] = json.loads(checks_file.read_text())
        outcomes[scenario] = not any(c.get("status") in ("FAILURE", "WARNING") for c in checks)
    return outcomes


def run_suite(node22: str, cli: str, url: str, requirements: str, tmp_path: Path) -> dict[str, bool]:
    output = tmp_path / "results"
    command = [node22, cli, "server", "--url", url, "--requirements", requirements, "-o", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SUITE_TIMEOUT, cwd=tmp_path)
    outcomes = scenario_outcomes(output)
    assert outcomes, f"the suite ran no scenario against {url}:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    return outcomes


@pytest.mark.long
@pytest.mark.parametrize(("requirements", "upstream"), PAIRS)
def test_conformance_suite_directly_and_through_mcpgw(
    node22: str,
    conformance_js: str,
    targets: dict[tuple[str, str], str],
    requirements: str,
    upstream: str,
    tmp_path: Path,
) -> None:
    results: dict[str, dict[str, bool]] = {}
    for side in ("direct", "mcpgw"):
        folder = tmp_path / side
        folder.mkdir()
        outcomes = run_suite(node22, conformance_js, targets[upstream, side], requirements, folder)
        results[side] = outcomes
        print(
            f"conformance {run_key(requirements, upstream, side)}: {sum(outcomes.values())}/{len(outcomes)}"
        )

    direct, through = results["direct"], results["mcpgw"]
    # The whole requirement set ran, the same scenarios both ways.
    assert len(direct) >= 30 and set(direct) == set(through)
    assert direct["tools-call-simple-text"] or requirements == "2026-07-28"
    for side, outcomes in results.items():
        key = run_key(requirements, upstream, side)
        failed = {name for name, ok in outcomes.items() if not ok}
        listed = set(expected_failures(key))
        assert not failed - listed, f"{key}: failed, and not in {EXPECTED.name}: {sorted(failed - listed)}"
        assert not listed - failed, (
            f"{key}: listed in {EXPECTED.name} but passes now: {sorted(listed - failed)}"
        )
