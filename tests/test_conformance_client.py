"""The official MCP conformance suite's client scenarios, with mcpgw as the client under test.

The suite (npm `@modelcontextprotocol/conformance`, Node 22) starts one scenario server per client
scenario and runs the client command against it: `conformance_shim.py`, which hands the scenario to
a fork of the resident `conformance_client.py`, mcpgw in its default configuration with that server
as its one upstream, driven by a client of the gateway that uses everything the gateway serves.
Every client scenario runs, two at a time; its checks judge what mcpgw sent upstream. The scenarios
expected to fail are in `tests/conformance-client-expected-failures.yml`, each with its cause: any
other failure, or a listed scenario that now passes, fails the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROCESS_LIMIT, ROOT

TESTS = Path(__file__).resolve().parent
DRIVER = TESTS / "conformance_client.py"
SHIM = TESTS / "conformance_shim.py"
EXPECTED = TESTS / "conformance-client-expected-failures.yml"
SCENARIO_TIMEOUT_MS = 120_000
"""How long the suite lets the client (the driver: a gateway and its client) run; a hang guard."""
SCENARIO_LIMIT = 300
"""Seconds one scenario's run may take, the suite's own start-up and stop included: a hang guard."""


def expected_failures() -> dict[str, str]:
    entries = yaml.safe_load(EXPECTED.read_text()) or {}
    assert isinstance(entries, dict), f"{EXPECTED} maps scenario names to causes"
    for scenario, cause in entries.items():
        assert isinstance(cause, str) and cause.strip(), f"{EXPECTED}: {scenario} needs its cause"
    return entries


def scenario_checks(output: Path) -> dict[str, list[dict[str, Any]]]:
    """Scenario name -> its checks, from the suite's `-o` folder (`auth/x` scenarios are subfolders)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for checks_file in sorted(output.glob("**/checks.json")):
        relative = checks_file.parent.relative_to(output).as_posix()
        found[re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", relative)] = json.loads(checks_file.read_text())
    return found


def passed(checks: list[dict[str, Any]]) -> bool:
    """As the suite's own baseline judges: no FAILURE and no WARNING."""
    return not any(c.get("status") in ("FAILURE", "WARNING") for c in checks)


def client_scenarios(node22: str, cli: str) -> list[str]:
    listed = subprocess.run(
        [node22, cli, "list", "--client"], capture_output=True, text=True, timeout=PROCESS_LIMIT, check=True
    )
    return re.findall(r"^\s+- (\S+)", listed.stdout, re.MULTILINE)


@pytest.fixture
def driver() -> Iterator[str]:
    """The resident driver (`conformance_client.py --serve`), its socket's path: mcpgw and the SDK are
    imported once, and each scenario's client command is a fork of it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS)])}
    with tempfile.TemporaryDirectory(prefix="mcpgw-cc-") as folder:
        path = os.path.join(folder, "driver.sock")  # short: a unix socket's path has a small limit
        process = subprocess.Popen(
            [sys.executable, str(DRIVER), "--serve", path], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
            yield path
        finally:
            process.kill()
            process.wait()


def run_scenario(node22: str, cli: str, scenario: str, output: Path, driver: str) -> str:
    """One scenario, its checks written under `output`; the suite's console output, for failures."""
    command = [node22, cli, "client", "--scenario", scenario, "-o", str(output)]
    # The suite splits the client command on spaces and runs it in a shell.
    command += ["--command", f"{sys.executable} -S {SHIM}", "--timeout", str(SCENARIO_TIMEOUT_MS)]
    env = {**os.environ, "MCPGW_CONFORMANCE_DRIVER": driver}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=SCENARIO_LIMIT, cwd=output.parent, env=env
    )
    return done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.long
def test_client_scenarios_with_mcpgw_as_the_client(
    node22: str, conformance_js: str, driver: str, tmp_path: Path
) -> None:
    scenarios = client_scenarios(node22, conformance_js)
    # The whole client suite runs, not a part of it that happened to pass.
    assert len(scenarios) >= 45 and {"http-custom-headers", "http-invalid-tool-headers"} <= set(scenarios)
    output = tmp_path / "results"
    # Two at a time (the machine's cores), not the suite's all-at-once: ~50 gateways starting
    # together on a busy 2-core machine outlast their upstreams' start-up limit.
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = pool.map(lambda s: run_scenario(node22, conformance_js, s, output, driver), scenarios)
        consoles = dict(zip(scenarios, runs, strict=True))
    checks = scenario_checks(output)
    for name, scenario in sorted(checks.items()):
        scored = [c for c in scenario if c.get("status") in ("SUCCESS", "FAILURE")]
        ok = sum(c["status"] == "SUCCESS" for c in scored)
        print(f"{name}: {ok}/{len(scored)} checks passed")
    assert set(checks) == set(scenarios), {s: consoles[s] for s in set(scenarios) - set(checks)}
    failing = {name for name, scenario in checks.items() if not passed(scenario)}
    expected = set(expected_failures())
    details = {}
    for name in failing - expected:
        problems = [
            f"{c['name']}: {c.get('errorMessage')}" for c in checks[name] if c.get("status") != "SUCCESS"
        ]
        details[name] = [*problems[:5], consoles[name][-1500:]]
    assert not failing - expected, f"unexpected failures: {json.dumps(details, indent=1)}"
    assert not expected - failing, f"stale waivers (these pass now): {sorted(expected - failing)}"
    # What the scenarios of issue 15's cause 8 measure: every check, none skipped or missing.
    for name, count in {"http-custom-headers": 18, "http-invalid-tool-headers": 12}.items():
        assert [c["status"] for c in checks[name]] == ["SUCCESS"] * count, name
