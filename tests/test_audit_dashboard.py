"""The shipped Datasette metadata: `datasette audit.db -m FILE` as a ready dashboard.

The audit database is written by a real gateway (parity harness) plus the log's own sampling
and refusal events; the canned queries run on it with sqlite3, and the real `datasette`
(installed from PyPI into .tools) serves the database with the metadata `mcpgw logs
--datasette-metadata` prints.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp.shared.exceptions import MCPError

from conftest import TOOLS_DIR, lite_server, pip_install, write_registry
from mcpgw.audit import AuditLog, Kind, Outcome, dashboard
from mcpgw.audit.schema import COLUMNS
from mcpgw.cli import cli
from parity import TestUpstream, gateway_client, registry, served

DATASETTE = "datasette==0.65.2"


@pytest.fixture
def audit_file(tmp_path: Path, audit_db: Path) -> Path:
    """An audit database with calls, a denial, a list, and two sampling requests."""
    import anyio

    async def traffic() -> None:
        config = registry(personas={"narrow": {"allow": ["up__echo"]}})
        async with (
            served(config, {"up": TestUpstream()}) as gateway,
            gateway_client(gateway, persona="narrow") as client,
        ):
            await client.call_tool("up__echo", {"message": "hi"})
            with pytest.raises(MCPError, match="up__add"):
                await client.call_tool("up__add", {"a": 1, "b": 2})

    anyio.run(traffic)
    log = AuditLog(audit_db, instance="dashboard-test").start()
    for tokens, cost in ((100, 0.25), (50, 0.5)):
        log.event(
            Kind.SAMPLING,
            persona="narrow",
            name="claude",
            result={"input_tokens": tokens, "output_tokens": 10, "cost_usd": cost},
        )
    log.event(Kind.SAMPLING, persona="narrow", name="claude", outcome=Outcome.REFUSED, error="budget spent")
    log.close()
    return audit_db


def metadata_file(tmp_path: Path, database: Path) -> Path:
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    result = CliRunner().invoke(cli, ["logs", "-c", str(config), "--datasette-metadata"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "metadata.json"
    path.write_text(result.stdout)
    assert list(json.loads(result.stdout)["databases"]) == [database.stem]
    return path


def test_every_column_has_a_label() -> None:
    labels = dashboard.metadata("audit")["databases"]["audit"]["tables"]["events"]["columns"]
    assert set(labels) == set(COLUMNS)


def test_the_canned_queries_run_on_a_real_audit_database(audit_file: Path) -> None:
    with sqlite3.connect(audit_file) as db:
        db.row_factory = sqlite3.Row
        answers = {
            name: [dict(row) for row in db.execute(sql, {"since": ""})]
            for name, sql in dashboard.queries().items()
        }
        later = {
            name: db.execute(sql, {"since": "2999"}).fetchall() for name, sql in dashboard.queries().items()
        }
    assert answers["spend"] == [
        {
            "persona": "narrow",
            "route": "claude",
            "requests": 3,
            "errors": 1,
            "input_tokens": 150,
            "output_tokens": 20,
            "cost_usd": 0.75,
        }
    ]
    assert [(row["persona"], row["cost_usd"]) for row in answers["spend_per_day"]] == [("narrow", 0.75)]
    denied = {(row["outcome"], row["name"]) for row in answers["denials"]}
    assert denied == {("denied", "up__add"), ("refused", "claude")}
    assert {row["outcome"]: row["times"] for row in answers["denials_by_reason"]} == {
        "denied": 1,
        "refused": 1,
    }
    calls = {row["name"]: (row["calls"], row["errors"]) for row in answers["errors_per_tool"]}
    assert calls["up__echo"] == (1, 0) and calls["up__add"] == (1, 1)
    assert all(rows == [] for rows in later.values())


def datasette() -> Path:
    """Datasette's own environment, made once per machine (`tests/tools.py` makes it before the suite)."""
    return pip_install(TOOLS_DIR / "datasette", DATASETTE)


def test_datasette_serves_it_as_a_dashboard(tmp_path: Path, audit_file: Path) -> None:
    venv = datasette()
    metadata = metadata_file(tmp_path, audit_file)

    def get(path: str) -> Any:
        done = subprocess.run(
            [str(venv / "bin" / "datasette"), str(audit_file), "-m", str(metadata), "--get", path],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (path, done.stdout, done.stderr)
        return json.loads(done.stdout)

    database = get(f"/{audit_file.stem}.json")
    assert {q["name"] for q in database["queries"]} == set(dashboard.queries())
    assert {t["name"]: t["hidden"] for t in database["tables"]} == {"events": False, "meta": True}
    spend = get(f"/{audit_file.stem}/spend.json?_shape=array")
    assert [(row["route"], row["requests"], row["cost_usd"]) for row in spend] == [("claude", 3, 0.75)]
    denials = get(f"/{audit_file.stem}/denials.json?_shape=array&since=2000-01-01")
    assert {row["outcome"] for row in denials} == {"denied", "refused"}
    events = get(f"/{audit_file.stem}/events.json?_size=1")
    assert set(events["facet_results"]) == {"kind", "outcome", "instance", "persona", "server"}
    kinds = {item["value"] for item in events["facet_results"]["kind"]["results"]}
    assert {"call", "list", "sampling"} <= kinds
