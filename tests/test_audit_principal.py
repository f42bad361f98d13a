"""Who made each request, in `mcpgw logs` and `mcpgw stats`: rows written by a real gateway with [auth].

A small authorization server (`servers/issuer.py`) signs the tokens of two
callers, alice and bob; they call tools through an HTTP gateway that checks
them and records `sub=... client_id=...` as each row's principal. The CLI is
then run (CliRunner) on that gateway's audit database.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import tomlkit
from click.testing import CliRunner
from fastmcp import Client

from conftest import SERVERS, background, free_port, gateway_stdio, lite_server, mcpgw_command
from mcpgw.cli import cli
from mcpgw.cli import output as cli_output

pytestmark = pytest.mark.anyio

SCOPE = "mcp:tools"


@dataclass
class Stack:
    config: Path
    audit: Path


def _mint(issuer: str, gateway: str, sub: str, client_id: str) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": sub,
        "client_id": client_id,
        "aud": f"{gateway}/mcp",
        "scope": SCOPE,
        "mcpgw_persona": "dev",
        "iat": now,
        "exp": now + 300,
    }
    response = httpx.post(f"{issuer}/mint", json={"claims": claims})
    response.raise_for_status()
    return str(response.json()["token"])


def _audit_count(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return int(db.execute("select count(*) from events where kind = 'call'").fetchone()[0])
        except sqlite3.OperationalError:  # the writer has not created the table yet
            return 0


async def _calls(gateway: str, alice: str, bob: str) -> None:
    async with Client(f"{gateway}/mcp", auth=alice) as client:
        await client.call_tool("up__echo", {"message": "from alice"})
        await client.call_tool("up__echo", {"message": "alice again"})
    async with Client(f"{gateway}/mcp", auth=bob) as client:
        await client.call_tool("up__echo", {"message": "from bob"})
        await client.call_tool("up__fail", {}, raise_on_error=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Alice calls echo twice and bob calls echo and fail, through a gateway with [auth]."""
    tmp = tmp_path_factory.mktemp("principal")
    issuer_port, gateway_port = free_port(), free_port()
    issuer, gateway = f"http://127.0.0.1:{issuer_port}", f"http://127.0.0.1:{gateway_port}"
    config, audit = tmp / "servers.toml", tmp / "audit.db"
    document = {
        "servers": {"up": lite_server()},
        "personas": {"dev": {}},
        "auth": {
            "issuer": issuer,
            "jwks_url": f"{issuer}/jwks",
            "public_url": gateway,
            "required_scopes": [SCOPE],
            "persona_claim": "mcpgw_persona",
        },
    }
    config.write_text(tomlkit.dumps(document))
    serve = mcpgw_command("serve", "-c", str(config), "-t", "http", "--port", str(gateway_port))
    with (
        background([sys.executable, str(SERVERS / "issuer.py"), str(issuer_port)], port=issuer_port),
        background([*serve, "--log-level", "warning"], port=gateway_port, env={"MCPGW_AUDIT_DB": str(audit)}),
    ):
        alice = _mint(issuer, gateway, "alice", "cli-a")
        bob = _mint(issuer, gateway, "bob", "cli-b")
        anyio.run(_calls, gateway, alice, bob)
        for _ in range(200):  # the audit writer commits in batches
            if _audit_count(audit) >= 4:
                break
            time.sleep(0.05)
    yield Stack(config=config, audit=audit)


@pytest.fixture
def reading(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("MCPGW_AUDIT_DB", str(stack.audit))
    monkeypatch.setattr(cli_output.out, "_width", 250)  # room for every column of the tables
    yield stack


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_logs_filters_by_a_substring_of_the_principal(reading: Stack) -> None:
    config = str(reading.config)
    lines = [
        json.loads(line) for line in run("logs", "-c", config, "--json", "--principal", "alice").splitlines()
    ]
    calls = [r for r in lines if r["kind"] == "call"]
    assert [json.loads(r["arguments"])["message"] for r in calls] == ["alice again", "from alice"]
    assert {r["principal"] for r in lines} == {"sub=alice client_id=cli-a"}
    # Any part of it: the client id finds bob's rows, and the filter combines with the others.
    lines = [
        json.loads(line)
        for line in run(
            "logs", "-c", config, "--json", "--principal", "cli-b", "--outcome", "error"
        ).splitlines()
    ]
    assert [(r["name"], r["principal"]) for r in lines] == [("up__fail", "sub=bob client_id=cli-b")]
    assert run("logs", "-c", config, "--json", "--principal", "mallory") == ""
    table = run("logs", "-c", config, "--principal", "bob")
    assert "principal" in table and "sub=bob client_id=cli-b" in table and "alice" not in table


def test_stats_per_principal(reading: Stack) -> None:
    config = str(reading.config)
    data = json.loads(run("stats", "-c", config, "--json"))
    by_principal = {row["key"]: row for row in data["principal"]}
    calls = {key: (row["calls"], row["errors"]) for key, row in by_principal.items() if key != "-"}
    # tools/list steps count too; each caller listed once when its client connected.
    assert calls["sub=alice client_id=cli-a"][1] == 0 and calls["sub=alice client_id=cli-a"][0] >= 2
    assert calls["sub=bob client_id=cli-b"][1] == 1 and calls["sub=bob client_id=cli-b"][0] >= 2
    only = json.loads(run("stats", "-c", config, "--json", "--by", "principal"))
    assert set(only) == {"principal", "sampling"} and only["principal"] == data["principal"]
    table = run("stats", "-c", config)
    assert "per principal" in table and "sub=bob client_id=cli-b" in table and "per tool" in table
    narrowed = run("stats", "-c", config, "--by", "principal")
    assert "per principal" in narrowed and "per tool" not in narrowed


def test_bad_grouping_is_a_usage_error(reading: Stack) -> None:
    result = CliRunner().invoke(cli, ["stats", "-c", str(reading.config), "--by", "colour"])
    assert result.exit_code == 2 and "'colour' is not one of" in result.output


async def test_without_auth_there_is_no_principal_column_or_table(
    tmp_path: Path, audit_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "servers.toml"
    # tiny.py: an echo, standard library only (starts in milliseconds, not a FastMCP CPU second)
    tiny = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
    config.write_text(tomlkit.dumps({"servers": {"up": tiny}}))
    async with gateway_stdio(config) as client:
        await client.call_tool("up__echo", {"message": "anonymous"})
    for _ in range(200):
        if _audit_count(audit_db) >= 1:
            break
        time.sleep(0.05)
    monkeypatch.setattr(cli_output.out, "_width", 250)
    table = run("logs", "-c", str(config))
    assert "up__echo" in table and "principal" not in table
    stats = run("stats", "-c", str(config))
    assert "per tool" in stats and "per principal" not in stats
