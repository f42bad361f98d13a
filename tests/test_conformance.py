"""The official MCP conformance suite, run against our fixture server directly and through mcpgw.

The suite (npm `@modelcontextprotocol/conformance`, which needs Node 22) is
installed by the test run itself into `.tools/conformance`, next to the Node 22
binary the `node22` fixture installs. It runs every server scenario
(`--suite all`) with `-o` into a temporary folder and with a baseline of
expected failures derived from `tests/conformance-expected-failures.yml`: any
other failure, or a listed scenario that now passes, fails the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SERVERS, TOOLS_DIR, _npm_install, background, free_port, mcpgw_command, write_registry

CONFORMANCE_PKG = "@modelcontextprotocol/conformance@0.1.16"
FIXTURE = SERVERS / "conformance.py"
EXPECTED = Path(__file__).resolve().parent / "conformance-expected-failures.yml"
SUITE_TIMEOUT = 180


@pytest.fixture(scope="session")
def conformance_js() -> str:
    prefix = _npm_install(TOOLS_DIR / "conformance", CONFORMANCE_PKG)
    cli = prefix / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    assert cli.exists(), f"{cli} missing after npm install"
    return str(cli)


@pytest.fixture(scope="module")
def fixture_url() -> Iterator[str]:
    port = free_port()
    with background([sys.executable, str(FIXTURE), "--http", str(port)], port=port):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def gateway_url(fixture_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mcpgw serve --transport http` with the fixture as its one upstream, names unprefixed."""
    folder = tmp_path_factory.mktemp("conformance-gateway")
    config = write_registry(folder / "servers.toml", {"fixture": {"url": fixture_url, "namespace": ""}})
    port = free_port()
    command = mcpgw_command(
        "serve", "--config", str(config), "--transport", "http", "--port", str(port), "--log-level", "warning"
    )
    with background(command, port=port, env={"MCPGW_AUDIT_DB": str(folder / "audit.db")}):
        yield f"http://127.0.0.1:{port}/mcp"


def expected_failures(target: str) -> dict[str, str]:
    loaded = yaml.safe_load(EXPECTED.read_text()) or {}
    entries = loaded.get(target) or {}
    assert isinstance(entries, dict), f"{EXPECTED}: '{target}' maps scenario names to reasons"
    for scenario, reason in entries.items():
        assert isinstance(reason, str) and reason.strip(), f"{EXPECTED}: {target}.{scenario} needs a reason"
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


def run_suite(node22: str, cli: str, url: str, target: str, tmp_path: Path) -> dict[str, bool]:
    baseline = tmp_path / "baseline.yml"
    baseline.write_text(yaml.safe_dump({"server": sorted(expected_failures(target))}))
    output = tmp_path / "results"
    command = [node22, cli, "server", "--url", url, "--suite", "all"]
    command += ["--expected-failures", str(baseline), "-o", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SUITE_TIMEOUT, cwd=tmp_path)
    outcomes = scenario_outcomes(output)
    passed = sum(outcomes.values())
    print(f"conformance {target}: {passed}/{len(outcomes)} scenarios passed")
    assert done.returncode == 0, (
        f"suite against {target} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    )
    return outcomes


def test_conformance_suite_against_the_fixture_directly(
    node22: str, conformance_js: str, fixture_url: str, tmp_path: Path
) -> None:
    outcomes = run_suite(node22, conformance_js, fixture_url, "direct", tmp_path)
    # The whole server suite ran, not a subset that happened to pass.
    assert len(outcomes) >= 32
    assert outcomes["tools-call-simple-text"] and outcomes["dns-rebinding-protection"]
    assert {name for name, ok in outcomes.items() if not ok} == set(expected_failures("direct"))


def test_conformance_suite_through_mcpgw_over_http(
    node22: str, conformance_js: str, gateway_url: str, tmp_path: Path
) -> None:
    outcomes = run_suite(node22, conformance_js, gateway_url, "mcpgw", tmp_path)
    assert len(outcomes) >= 32
    assert {name for name, ok in outcomes.items() if not ok} == set(expected_failures("mcpgw"))
