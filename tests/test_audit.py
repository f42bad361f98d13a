"""The audit log: real calls through the gateway, then assertions on the rows in the SQLite file.

The gateway is served in memory (tests/parity.py) except where an HTTP upstream's headers or the
CLI are the point; the database is always a real file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlite_utils
import tomlkit
from click.testing import CliRunner
from mcp.shared.exceptions import MCPError

from conftest import gateway_stdio, lite_server, mcpgw_command, run_mcpgw, write_registry
from mcpgw.audit import AuditLog, Kind, Outcome, Step, current, note, recording
from mcpgw.cli import cli
from mcpgw.config import load
from mcpgw.errors import UpstreamTimeout
from parity import TestUpstream, gateway_client, registry, served

pytestmark = pytest.mark.anyio

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
HEADER_SECRET = "Bearer header-secret-0123456789abcdef"


async def until(condition: Any) -> None:
    """Poll `condition()`; the bound only stops a test that would otherwise hang."""
    with anyio.fail_after(60):
        while not condition():
            await anyio.sleep(0.02)


def rows(db_path: Path, **where: Any) -> list[dict[str, Any]]:
    db = sqlite_utils.Database(db_path)
    clause = " and ".join(f"{k} = ?" for k in where) or "1"
    return list(db.query(f"select * from events where {clause} order by id", list(where.values())))


def registry_with_personas(
    path: Path, servers: dict[str, Any], personas: dict[str, Any], audit: dict[str, Any] | None = None
) -> Path:
    write_registry(path, servers)
    doc = tomlkit.parse(path.read_text())
    doc["personas"] = personas
    if audit:
        doc["audit"] = audit
    path.write_text(tomlkit.dumps(doc))
    return path


async def test_every_kind_of_step_is_recorded(tmp_path: Path, audit_db: Path) -> None:
    config = registry_with_personas(
        tmp_path / "servers.toml",
        {"up": {"command": "in-process", "timeout": 1.0}, "broken": {"command": str(tmp_path / "missing")}},
        {"default": {"deny": ["up__pid"]}},
    )
    registry, path = load(config)
    upstream = TestUpstream()
    async with (
        served(registry, {"up": upstream}, registry_path=path) as gateway,
        gateway_client(gateway, mode="legacy") as client,
    ):
        await client.list_tools()
        await client.call_tool("up__echo", {"message": "hi"})
        await client.call_tool("up__fail", {})
        for name in ("up__pid", "up__nothing"):
            with pytest.raises(MCPError):
                await client.call_tool(name, {})
        with pytest.raises(MCPError):
            await client.call_tool("up__sleep", {"seconds": 600})
        await client.read_resource("mcpgw://up/test://static")
        await client.get_prompt("up__greet", {"name": "Ann"})
        async with anyio.create_task_group() as tg:  # cancelled by the client once the upstream has it
            tg.start_soon(client.call_tool, "up__slow", {"steps": 600, "delay": 0.1})
            with anyio.fail_after(60):
                while not any(c["name"] == "slow" for c in upstream.calls):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        await client.call_tool("up__echo", {"message": "after"})

    calls = {(r["name"], r["outcome"]) for r in rows(audit_db, kind="call")}
    assert {
        ("up__echo", "ok"),
        ("up__fail", "error"),
        ("up__pid", "denied"),
        ("up__nothing", "error"),
        ("up__sleep", "timeout"),
        ("up__slow", "cancelled"),
    } <= calls
    echo = rows(audit_db, kind="call", name="up__echo")[0]
    assert echo["persona"] == "default" and echo["server"] == "up" and echo["client"] == "mcp"
    assert echo["protocol"] == "2025-11-25" and echo["latency_ms"] > 0
    assert json.loads(echo["arguments"]) == {"message": "hi"} and echo["arg_bytes"] > 0
    assert "upstream 'up'" in rows(audit_db, kind="call", name="up__sleep")[0]["error"]
    assert rows(audit_db, kind="read")[0]["name"] == "mcpgw://up/test://static"
    assert rows(audit_db, kind="prompt")[0]["outcome"] == "ok"
    assert rows(audit_db, kind="list", name="tools/list")
    states = {(r["server"], r["name"], r["outcome"]) for r in rows(audit_db, kind="upstream")}
    assert {("up", "ready", "ok"), ("broken", "failed", "error"), ("up", "stopped", "ok")} <= states
    assert rows(audit_db, kind="config")[0]["name"] == str(config)
    request_ids = [r["request_id"] for r in rows(audit_db)]
    assert len(request_ids) == len(set(request_ids))


async def test_secrets_never_reach_the_database_file(
    tmp_path: Path, audit_db: Path, http_upstream: str
) -> None:
    config = registry_with_personas(
        tmp_path / "servers.toml",
        {"up": {"url": http_upstream, "headers": {"Authorization": HEADER_SECRET}}},
        {},
        audit={"redact_keys": ["message_key"]},
    )
    async with gateway_stdio(config) as client:
        result = await client.call_tool("up__echo", {"message": f"my token is {GITHUB_TOKEN}"})
        assert GITHUB_TOKEN in result.content[0].text  # type: ignore[union-attr]  # the client still gets it
        await client.call_tool("up__echo", {"message": "x", "password": "hunter2-plain"})
    echo = rows(audit_db, kind="call", name="up__echo")[0]
    assert "[REDACTED:github-token]" in echo["arguments"] and "[REDACTED:github-token]" in echo["result"]
    data = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    for secret in (GITHUB_TOKEN, "hunter2-plain", "header-secret-0123456789abcdef"):
        assert secret.encode() not in data, secret


def test_an_unwritable_database_is_a_clear_error_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = registry_with_personas(
        tmp_path / "servers.toml", {"up": lite_server()}, {}, audit={"path": str(blocker / "audit.db")}
    )
    done = run_mcpgw("serve", "--config", str(config))
    assert done.returncode == 2
    assert "cannot open the audit database" in done.stderr and "audit.path" in done.stderr


async def test_a_locked_database_does_not_stop_calls_and_loses_nothing(
    audit_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcpgw.audit")
    async with served(registry(), {"up": TestUpstream()}) as gateway, gateway_client(gateway) as client:
        audit = gateway.audit
        assert audit is not None
        await client.call_tool("up__echo", {"message": "before"})
        await until(lambda: len(rows(audit_db, kind="call")) == 1)  # the writer has the database
        lock = sqlite3.connect(audit_db, timeout=5)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            # calls go on while the writer cannot write: all answered, none of their rows written yet
            await client.call_tool("up__echo", {"message": "during 0"})
            await until(lambda: "writing to" in caplog.text and "failed" in caplog.text)
            written = audit.written  # no write can succeed from here until the lock is gone
            for i in range(1, 30):
                await client.call_tool("up__echo", {"message": f"during {i}"})
            assert audit.written == written
        finally:
            lock.rollback()
            lock.close()
        await until(lambda: "writing works again" in caplog.text)
        await client.call_tool("up__echo", {"message": "after"})
    assert len(rows(audit_db, kind="call")) == 32


def test_logs_and_stats_commands(tmp_path: Path, audit_db: Path) -> None:
    db = sqlite_utils.Database(audit_db)
    from mcpgw.audit import COLUMNS, ensure_schema

    ensure_schema(db)
    base = {k: None for k in COLUMNS}
    db["events"].insert_all(
        [
            {
                **base,
                "ts": "2020-01-01T00:00:00+00:00",
                "kind": "call",
                "persona": "a",
                "server": "s",
                "name": "s__t",
                "outcome": "ok",
                "latency_ms": 5.0,
                "request_id": "old",
            },
            {
                **base,
                "ts": "2099-01-01T00:00:00+00:00",
                "kind": "call",
                "persona": "a",
                "server": "s",
                "name": "s__t",
                "outcome": "error",
                "latency_ms": 15.0,
                "request_id": "new1",
                "error": "boom",
            },
            {
                **base,
                "ts": "2099-01-01T00:00:01+00:00",
                "kind": "call",
                "persona": "b",
                "server": "s",
                "name": "s__u",
                "outcome": "ok",
                "latency_ms": 1.0,
                "request_id": "new2",
            },
        ]
    )
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    runner = CliRunner()
    result = runner.invoke(cli, ["logs", "-c", str(config), "--json", "--persona", "a"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["request_id"] for r in lines] == ["new1", "old"]  # newest first
    result = runner.invoke(cli, ["logs", "-c", str(config), "--json", "--outcome", "error"])
    assert [json.loads(line)["error"] for line in result.stdout.splitlines()] == ["boom"]
    result = runner.invoke(cli, ["stats", "-c", str(config), "--json"])
    data = json.loads(result.stdout)
    persona_a = next(r for r in data["persona"] if r["key"] == "a")
    assert persona_a["calls"] == 2 and persona_a["errors"] == 1
    result = runner.invoke(cli, ["logs", "-c", str(config), "--prune", "30"])
    assert result.exit_code == 0 and "pruned 1 row older than" in result.output
    assert [r["request_id"] for r in rows(audit_db)] == ["new1", "new2"]


def test_logs_without_a_database_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_AUDIT_DB", str(tmp_path / "none.db"))
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    result = CliRunner().invoke(cli, ["logs", "-c", str(config)])
    assert result.exit_code == 2 and "no audit database" in result.output


async def test_the_database_opens_with_the_sqlite_utils_cli(audit_db: Path) -> None:
    async with served(registry(), {"up": TestUpstream()}) as gateway, gateway_client(gateway) as client:
        await client.call_tool("up__echo", {"message": "hi"})
    sqlite_utils_cli = Path(sys.executable).parent / "sqlite-utils"
    done = subprocess.run(
        [
            str(sqlite_utils_cli),
            "query",
            str(audit_db),
            "select kind, name, outcome from events where kind = 'call'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"kind": "call", "name": "up__echo", "outcome": "ok"}]


def test_logs_follow_prints_new_rows(tmp_path: Path, audit_db: Path) -> None:
    from mcpgw.audit import COLUMNS, ensure_schema

    db = sqlite_utils.Database(audit_db)
    ensure_schema(db)
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    with subprocess.Popen(
        mcpgw_command("logs", "-c", str(config), "--follow", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        try:
            db["events"].insert(
                {
                    **{k: None for k in COLUMNS},
                    "ts": "2099-01-01T00:00:00+00:00",
                    "kind": "call",
                    "name": "live__tool",
                    "outcome": "ok",
                    "request_id": "live",
                }
            )
            assert follower.stdout is not None
            line = follower.stdout.readline()
            assert json.loads(line)["request_id"] == "live"
        finally:
            follower.terminate()


# --- the step vocabulary and `mcpgw logs --outcome` -------------------------------------------------


def written(path: Path, write: Callable[[AuditLog], None]) -> None:
    """Rows written by a real `AuditLog` writer thread, flushed and closed."""
    log = AuditLog(path).start()
    try:
        write(log)
    finally:
        log.close()


@pytest.mark.parametrize("outcome", list(Outcome))
def test_logs_accepts_every_outcome_and_finds_its_rows(
    tmp_path: Path, audit_db: Path, outcome: Outcome
) -> None:
    def write(log: AuditLog) -> None:
        log.event(Kind.SECURITY, name="other", outcome=Outcome.ERROR if outcome is Outcome.OK else Outcome.OK)
        log.event(Kind.SECURITY, name="this", outcome=outcome)

    written(audit_db, write)
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    result = CliRunner().invoke(cli, ["logs", "-c", str(config), "--json", "--outcome", outcome.value])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["this"]


def test_expired_and_refused_rows_are_found_by_their_outcome(tmp_path: Path, audit_db: Path) -> None:
    """Rows shaped as the auth guard and the sampler write them are found by `--outcome`."""

    def write(log: AuditLog) -> None:
        log.record_step(Step(kind=Kind.AUTH, method="GET /mcp", outcome=Outcome.EXPIRED, error="expired"))
        log.event(Kind.SAMPLING, server="up", outcome=Outcome.REFUSED, error="budget spent")
        log.event(Kind.UPSTREAM, server="up", name="ready")

    written(audit_db, write)
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    for outcome, kind in (("expired", "auth"), ("refused", "sampling")):
        result = CliRunner().invoke(cli, ["logs", "-c", str(config), "--json", "--outcome", outcome])
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["kind"] for line in result.stdout.splitlines()] == [kind]


def test_logs_with_an_unknown_outcome_is_a_one_line_error(tmp_path: Path, audit_db: Path) -> None:
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    result = CliRunner().invoke(cli, ["logs", "-c", str(config), "--outcome", "exploded"])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'exploded' is not one of" in errors[0], result.stderr
    assert all(f"'{outcome.value}'" in errors[0] for outcome in Outcome)


class Collected:
    """A `Recorder` that keeps the steps it is handed."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def record_step(self, step: Step) -> None:
        self.steps.append(step)


async def one_step(work: Callable[[], Awaitable[None]]) -> Step:
    """`work` run as one recorded step; the step, checked to be recorded exactly once."""
    into, step = Collected(), Step(kind=Kind.CALL, method="tools/call")
    with contextlib.suppress(MCPError), recording(step, into=into):
        assert current() is step
        await work()
    assert current() is None and into.steps == [step]
    return step


async def test_recording_tells_how_the_work_ended() -> None:
    async def fine() -> None:
        note(server="up")

    async def fails() -> None:
        raise MCPError(code=-32603, message="boom")

    async def times_out() -> None:
        try:
            raise UpstreamTimeout("up", "no answer in 1s")
        except UpstreamTimeout as exc:
            raise MCPError(code=-32603, message=str(exc)) from exc

    async def denied() -> None:
        note(outcome=Outcome.DENIED)
        raise MCPError(code=-32602, message="unknown tool")

    async def cancelled() -> None:
        with anyio.CancelScope() as scope:
            step = current()
            assert step is not None
            scope.cancel()
            await anyio.sleep(1)
        assert step.outcome is Outcome.OK  # the cancellation was caught here: nothing to record yet

    ok = await one_step(fine)
    assert (ok.outcome, ok.server, ok.error) == (Outcome.OK, "up", None)
    failed = await one_step(fails)
    assert (failed.outcome, failed.error) == (Outcome.ERROR, "boom")
    assert (await one_step(times_out)).outcome is Outcome.TIMEOUT
    refused = await one_step(denied)
    assert (refused.outcome, refused.error) == (Outcome.DENIED, "unknown tool")
    assert (await one_step(cancelled)).outcome is Outcome.OK


async def test_recording_a_cancelled_step() -> None:
    into, step = Collected(), Step(kind=Kind.CALL, method="tools/call", outcome=Outcome.DENIED)
    with anyio.CancelScope() as scope, recording(step, into=into):
        scope.cancel()
        await anyio.sleep(1)
    assert into.steps == [step]
    assert (step.outcome, step.error) == (Outcome.CANCELLED, "cancelled by the client or at shutdown")


def test_a_free_string_is_no_outcome() -> None:
    with pytest.raises(ValueError):
        Step(kind=Kind.CALL, method="tools/call", outcome="exploded")  # type: ignore[arg-type]
    with recording(Step(kind=Kind.CALL, method="tools/call"), into=None), pytest.raises(ValueError):
        note(outcome="exploded")


# --- attacks on the log itself (each test is named after one) ---------------------------------------

ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e\u200b"
"""Clear the screen, set the window title, an 8-bit CSI, a right-to-left override, a zero-width space."""
CONTROLS = "\x1b\x07\x9b\u202e\u200b"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202e\\u200b"


def only_row(path: Path) -> dict[str, Any]:
    [row] = rows(path)
    return row


def test_escape_sequences_are_stored_as_visible_text_in_every_column(tmp_path: Path) -> None:
    step = Step(
        kind=Kind.CALL,
        method=f"tools/call{ESCAPES}",
        persona=ESCAPES,
        client=ESCAPES,
        protocol=ESCAPES,
        principal=f"sub={ESCAPES}",
        server=ESCAPES,
        name=ESCAPES,
        error=ESCAPES,
        arguments={"text": ESCAPES},
        result=ESCAPES,
        findings=ESCAPES,
    )
    written(tmp_path / "audit.db", lambda log: log.record_step(step))
    row = only_row(tmp_path / "audit.db")
    for column in ("persona", "client", "protocol", "server", "name", "error", "findings"):
        assert row[column] == SHOWN, column
    assert row["method"] == f"tools/call{SHOWN}" and row["principal"] == f"sub={SHOWN}"
    stored = "".join(value for value in row.values() if isinstance(value, str))
    assert not any(char in stored for char in CONTROLS), stored
    assert "owned" in row["arguments"] and "owned" in row["result"]


def test_a_huge_name_is_stored_bounded_with_a_marker(tmp_path: Path) -> None:
    from mcpgw.audit.fields import ARGUMENTS_CHARS, ERROR_CHARS, FIELD_CHARS, SUMMARY_CHARS

    huge = "n" * 3_500_000

    def write(log: AuditLog) -> None:
        log.record_step(
            Step(
                kind=Kind.CALL,
                method=huge,
                persona=huge,
                client=huge,
                principal=huge,
                server=huge,
                name=huge,
                error=huge,
                arguments={"a": huge},
                result=huge,
            )
        )
        log.event(
            Kind.SAMPLING, server=huge, name=huge, error=huge, result={"model": huge, "input_tokens": 7}
        )

    written(tmp_path / "audit.db", write)
    for row in rows(tmp_path / "audit.db"):
        for column in ("method", "persona", "client", "principal", "server", "name"):
            if row[column] is not None:
                assert len(row[column]) <= FIELD_CHARS, column
                assert row[column].endswith("…[cut: 3500000 chars]"), column
        assert len(row["error"]) <= ERROR_CHARS and row["error"].endswith("…[cut: 3500000 chars]")
    call, sampling = rows(tmp_path / "audit.db")
    assert len(call["arguments"]) <= ARGUMENTS_CHARS and "…[cut: " in call["arguments"]
    assert len(call["result"]) <= SUMMARY_CHARS
    accounting = json.loads(sampling["result"])  # still JSON: spend is read back from it
    assert accounting["input_tokens"] == 7 and len(accounting["model"]) <= FIELD_CHARS
    assert (tmp_path / "audit.db").stat().st_size < 1_000_000


def test_secrets_inside_uris_are_redacted_in_every_column(tmp_path: Path) -> None:
    uri = "https://alice:hunter2-pw@db.example.com/x?page=2&access_token=tok-in-query-123&api_key=k3y-val"
    secrets = ("hunter2-pw", "tok-in-query-123", "k3y-val")

    def write(log: AuditLog) -> None:
        log.record_step(
            Step(
                kind=Kind.READ,
                method=f"resources/read {uri}",
                persona=uri,
                client=uri,
                protocol=uri,
                principal=uri,
                server=uri,
                name=uri,
                error=f"cannot read {uri}",
                arguments={"uri": uri},
                result={"contents": uri},
                findings=uri,
            )
        )
        log.event(Kind.UPSTREAM, server=uri, name=uri, method=uri, persona=uri, error=uri, result={"u": uri})

    written(tmp_path / "audit.db", write)
    read, event = rows(tmp_path / "audit.db")
    assert (
        read["name"]
        == event["name"]
        == (
            "https://[REDACTED:url-password]@db.example.com/x?page=2"
            "&access_token=[REDACTED:url-parameter]&api_key=[REDACTED:url-parameter]"
        )
    )
    data = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    for secret in secrets:
        assert secret.encode() not in data, secret


def test_logs_shows_rows_an_older_version_wrote_without_driving_the_terminal(
    tmp_path: Path, audit_db: Path
) -> None:
    from mcpgw.audit import COLUMNS, ensure_schema

    db = sqlite_utils.Database(audit_db)
    ensure_schema(db)
    raw = {k: None for k in COLUMNS}
    db["events"].insert(
        {
            **raw,
            "ts": "2099-01-01T00:00:00+00:00",
            "kind": "auth",
            "persona": ESCAPES,
            "name": "n" * 3_500_000,
            "error": ESCAPES,
            "outcome": "denied",
            "request_id": "legacy",
        }
    )
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(cli, ["logs", "-c", str(config), *extra])
        assert result.exit_code == 0, result.output
        assert not any(char in result.stdout for char in CONTROLS), extra
        assert len(result.stdout) < 20_000, len(result.stdout)
    line = json.loads(result.stdout)
    assert line["persona"] == line["error"] == SHOWN


def test_logs_prints_rich_markup_in_a_stored_persona_or_server_as_text(
    tmp_path: Path, audit_db: Path
) -> None:
    """A persona path like `[link=https://evil]` was rendered as a terminal hyperlink by `mcpgw logs`,
    and vanished from its `--json` lines."""
    from mcpgw.audit import COLUMNS, ensure_schema

    db = sqlite_utils.Database(audit_db)
    ensure_schema(db)
    markup = "[link=https://evil.example]click[/link][bold]x[/]"
    row = {k: None for k in COLUMNS}
    db["events"].insert(
        {**row, "ts": "2099-01-01T00:00:00+00:00", "kind": "auth", "persona": markup, "server": markup}
        | {"outcome": "denied", "request_id": "markup"}
    )
    config = write_registry(tmp_path / "servers.toml", {"up": lite_server()})
    table = CliRunner().invoke(cli, ["logs", "-c", str(config)])
    assert table.exit_code == 0, table.output
    assert table.stdout.count("[link=") == 2, table.stdout  # shown as text (a cell may wrap after it)
    lines = CliRunner().invoke(cli, ["logs", "-c", str(config), "--json"])
    assert json.loads(lines.stdout)["persona"] == json.loads(lines.stdout)["server"] == markup


def test_refusals_and_security_events_are_on_disk_when_recording_returns(tmp_path: Path) -> None:
    """No waiting for the writer: a row that says something was refused or withheld is committed."""
    path = tmp_path / "audit.db"

    def count() -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("select count(*) from events").fetchone()[0])

    def write(log: AuditLog) -> None:
        log.event(Kind.SECURITY, server="up", name="up__x", outcome=Outcome.WITHHELD, error="pin differs")
        assert count() == 1
        log.event(Kind.SECURITY, server="up", name="up__y", outcome=Outcome.WARNING, error="poisoning")
        assert count() == 2
        log.record_step(Step(kind=Kind.CALL, method="tools/call", outcome=Outcome.BLOCKED, error="card"))
        assert count() == 3
        log.record_step(Step(kind=Kind.AUTH, method="POST /mcp", outcome=Outcome.DENIED, error="no token"))
        assert count() == 4

    written(path, write)


def test_refusals_fold_into_one_row_per_key_and_interval() -> None:
    from mcpgw.audit import Folds

    clock = [0.0]
    folds = Folds(interval=10, max_keys=3, clock=lambda: clock[0])
    first = folds.add("no token")
    assert first.new and first.count == 1
    for _ in range(99):
        assert not folds.add("no token").new
    assert first.count == 100 and first.result()["count"] == 100
    assert folds.add("bad token").new  # another key, its own row
    clock[0] = 10.0
    second = folds.add("no token")
    assert second.new and second.previous == 100 and second.request_id != first.request_id
    assert folds.add("bad token").new
    # Past max_keys open windows, new keys share one overflow window.
    assert folds.add("c").new and not folds.add("c").overflow
    overflow = folds.add("d")
    assert overflow.overflow and overflow.new and not folds.add("e").new
    assert overflow.count == 2
    clock[0] = 25.0  # every window over: room again
    assert not folds.add("f").overflow


def test_request_ids_survive_the_audits_own_redaction() -> None:
    """A row's JSON may name other requests by id (a flow refusal lists its chain of steps): the card
    detector, which the audit always applies, must not take an id for a card number. With hex ids, one
    in a few hundred held a 13-digit run that passes the checksum and came back `[REDACTED:card]`."""
    from mcpgw.audit.redact import Redactor
    from mcpgw.audit.step import new_request_id

    ids = [new_request_id() for _ in range(3000)]
    assert Redactor().value({"steps": [{"request_id": i} for i in ids]}) == {
        "steps": [{"request_id": i} for i in ids]
    }


def test_logs_session_finds_a_session_whose_id_looks_like_a_card_number(tmp_path: Path) -> None:
    """Session ids are mostly random hex (the SDK's MCP session ids, a 2026-07-28 client's uuid); about
    one in 450 holds a digit run that passes the card checksum, like this one. Redacted as a card, its
    rows were stored under an id nobody had: `logs --session` showed none of them. Credentials in an id
    are still redacted."""
    carded, keyed = "8320411228004a61bc512dc318bb7011", "run-AKIAABCDEFGHIJKLMNOP"
    numbered = "sub=4111111111111111 client_id=cli-1"

    def write(log: AuditLog) -> None:
        for session, name in ((carded, "crm__echo"), (carded, "mail__echo"), (keyed, "web__echo")):
            log.record_step(Step(kind=Kind.CALL, method="tools/call", name=name, session=session))
        # A principal is looked up the same way (`logs --principal`): an account number as the subject.
        log.record_step(Step(kind=Kind.CALL, method="tools/call", name="num__echo", principal=numbered))

    written(tmp_path / "audit.db", write)
    env = {"MCPGW_AUDIT_DB": str(tmp_path / "audit.db")}
    shown = CliRunner().invoke(cli, ["logs", "--session", carded, "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert [(r["session"], r["name"]) for r in map(json.loads, shown.stdout.splitlines())] == [
        (carded, "crm__echo"),
        (carded, "mail__echo"),
    ]
    by_principal = CliRunner().invoke(cli, ["logs", "--principal", "sub=4111111111111111", "--json"], env=env)
    assert by_principal.exit_code == 0, by_principal.output
    assert [json.loads(line)["name"] for line in by_principal.stdout.splitlines()] == ["num__echo"]
    (keyed_row,) = rows(tmp_path / "audit.db", name="web__echo")
    assert keyed_row["session"].startswith("run-[REDACTED:aws-key]")
    assert b"AKIAABCDEFGHIJKLMNOP" not in b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))


def test_request_ids_begin_with_the_time_so_rows_written_together_sit_together() -> None:
    """An id's first 8 characters are the centisecond its batch of ids was made: rows written at
    one time share a prefix, so their `request_id` index entries share pages (random ids cost a
    page each). The other 24 characters are random: ids never repeat."""
    import base64
    import time

    from mcpgw.audit.step import new_request_id

    before = int(time.time() * 100)
    ids = [new_request_id() for _ in range(200)]  # past the 64 made ahead: from batches made now
    after = int(time.time() * 100)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and i == i.lower() for i in ids)
    assert all(len(base64.b32decode(i.upper())) == 20 for i in ids)  # base32 throughout: 160 bits
    made = [int.from_bytes(base64.b32decode(i[:8].upper()), "big") for i in ids[-100:]]
    assert all(before <= m <= after for m in made)
    assert made == sorted(made)


PROSE = "The quick brown fox jumps over the lazy dog, as an upstream's echo gives it back: {} and more."
GLUED_SECRETS = {  # each kind of secret glued to word characters, the bearer scheme in mixed case
    "aws-key": "x_AKIAIOSFODNN7EXAMPLE",
    "github-token": f"x{GITHUB_TOKEN}",
    "slack-token": "tokenxoxb-1234567890-abcdefghij",
    "jwt": "x_eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl",
    "bearer": "BeArEr abcdef0123456789",
    "private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    "url-password": "https://bob:hunter2-pw@git.example.com/r",
    "card": "ref-4111-1111-1111-1111",
    "email": "first_last@example.com",
    "custom": "ORDER-77231",
}


def test_every_kind_of_secret_in_a_short_result_or_argument_is_redacted(tmp_path: Path) -> None:
    """Most texts hold nothing to redact and are screened in one pass; one that holds any secret,
    a data rule's (e-mail) or a custom pattern's, is still redacted in every column it reaches."""
    from mcpgw.audit.redact import Redactor
    from mcpgw.detectors import BUILTIN

    redactor = Redactor(extra_patterns=[r"ORDER-\d+"], detectors=[BUILTIN["email"]])
    log = AuditLog(tmp_path / "audit.db", redactor=redactor).start()
    try:
        for name, secret in GLUED_SECRETS.items():
            text = PROSE.format(secret)
            log.record_step(
                Step(kind=Kind.CALL, method="tools/call", name=name, arguments={"m": text}, result=text)
            )
            log.record_step(Step(kind=Kind.CALL, method="tools/call", name=name, error=text, result="ok"))
    finally:
        log.close()
    for row in rows(tmp_path / "audit.db"):
        stored = " ".join(str(row[c]) for c in ("arguments", "result", "error"))
        assert f"[REDACTED:{row['name']}]" in stored and "fox jumps" in stored, row
    data = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    for secret in ("IOSFODNN7", GITHUB_TOKEN, "1234567890-abc", "c2lnbmF0", "abcdef0123456789", "MIIEow"):
        assert secret.encode() not in data, secret
    for secret in ("hunter2-pw", "4111-1111", "first_last@", "ORDER-77231"):
        assert secret.encode() not in data, secret
