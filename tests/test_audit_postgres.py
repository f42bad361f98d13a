"""The audit log on PostgreSQL (`[audit] url`): the same rows as SQLite, read by the same CLI.

A real server (tests/pg.py, once per session); every test has a schema of its own. Traffic goes
through the in-memory gateway (tests/parity.py) into both stores and the rows must be equal;
`mcpgw logs` and `stats` must print the same for both; a database that goes away loses nothing
(up to the buffer's bound, then drops are counted and said); one that cannot be used stops
the gateway at start with a message that says why and never shows the password.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import (
    TLS,
    background,
    free_port,
    lite_server,
    mcpgw_command,
    modules_after,
    run_mcpgw,
    write_registry,
)
from mcpgw.audit import (
    COLUMNS,
    AuditLog,
    Kind,
    Outcome,
    SqliteStore,
    Step,
    Store,
    open_for,
    open_for_reading,
    query,
    spend,
    store_for,
)
from mcpgw.audit.postgres import PostgresStore
from mcpgw.cli import cli
from mcpgw.config import AuditSettings, SamplingSettings
from mcpgw.errors import ConfigError, SamplingRefused
from mcpgw.sampling.budget import Budgets
from parity import MODES, TestUpstream, gateway_client, registry, served
from pg import PASSWORD, Postgres

pytestmark = pytest.mark.anyio

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
VARYING = ("id", "ts", "request_id", "latency_ms", "session")
"""What differs between two runs of the same traffic: the clock, random ids, the session id."""


async def until(condition: Any) -> None:
    """Poll `condition()`; the bound only stops a test that would otherwise hang."""
    with anyio.fail_after(60):
        while not condition():
            await anyio.sleep(0.02)


def config_with(path: Path, audit: dict[str, Any]) -> Path:
    config = write_registry(path, {"up": lite_server()})
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in audit.items())
    config.write_text(config.read_text() + "\n[audit]\n" + lines)
    return config


@contextmanager
def unreachable(server: Postgres) -> Iterator[None]:
    """The gateway's database refuses every connection, and the ones it has are cut, until the block ends."""
    with server.admin() as admin:
        admin.execute("alter database mcpgw allow_connections false")
        admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'mcpgw'")
        try:
            yield
        finally:
            admin.execute("alter database mcpgw allow_connections true")


# --- the same rows -------------------------------------------------------------------------------


async def traffic(store: Store, mode: str) -> None:
    config = registry(audit={"redact_keys": ["api_key"]}, personas={"default": {"deny": ["up__pid"]}})
    log = AuditLog(store, instance="replica-1").start()
    try:
        async with (
            served(config, {"up": TestUpstream()}, audit=log) as gateway,
            gateway_client(gateway, mode=mode) as client,
        ):
            await client.list_tools()
            await client.call_tool("up__echo", {"message": f"my token is {GITHUB_TOKEN}"})
            await client.call_tool("up__echo", {"message": "x", "api_key": "plain-secret-value"})
            await client.call_tool("up__fail", {})
            with pytest.raises(MCPError):
                await client.call_tool("up__pid", {})
            await client.read_resource("mcpgw://up/test://static")
            await client.get_prompt("up__greet", {"name": "Ann"})
    finally:
        log.close()


def comparable(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(str(v) for k, v in row.items() if k not in VARYING) for row in rows)


@pytest.mark.parametrize("mode", MODES)
async def test_the_same_traffic_makes_the_same_rows_as_on_sqlite(
    mode: str, tmp_path: Path, pg_url: str, postgres_server: Postgres
) -> None:
    await traffic(SqliteStore(tmp_path / "same.db"), mode)
    await traffic(PostgresStore(pg_url), mode)
    with SqliteStore(tmp_path / "same.db").reading() as db:
        on_sqlite = db.select("select * from events order by id")
    on_postgres = postgres_server.rows(pg_url)
    assert [list(row) for row in on_postgres] == [list(row) for row in on_sqlite]  # columns, in order
    assert comparable(on_postgres) == comparable(on_sqlite)
    calls = {(r["name"], r["outcome"]) for r in on_postgres if r["kind"] == "call"}
    assert calls == {("up__echo", "ok"), ("up__fail", "error"), ("up__pid", "denied")}
    assert {r["instance"] for r in on_postgres} == {"replica-1"}
    text = json.dumps(on_postgres)
    assert GITHUB_TOKEN not in text and "plain-secret-value" not in text
    assert "[REDACTED:github-token]" in text
    assert all(isinstance(r["latency_ms"], float) for r in on_postgres if r["kind"] == "call")


# --- mcpgw logs and stats ------------------------------------------------------------------------

NOW = datetime.now(UTC)


def history(log: AuditLog) -> None:
    """Rows of every shape `logs` and `stats` read: requests of two personas and principals, a session,
    an old row, a sampling row with its spend, and text that must come out escaped."""
    alice = {"persona": "a", "server": "s", "name": "s__t", "principal": "sub=alice client_id=c1"}
    steps = [
        Step(Kind.CALL, "tools/call", **alice, session="sess-1", ts=(NOW - timedelta(days=40)).isoformat()),
        Step(
            Kind.CALL, "tools/call", **alice, outcome=Outcome.ERROR, error="boom \x1b[31m", session="sess-1"
        ),
        Step(Kind.READ, "resources/read", persona="b", server="s", name="s://r", session="sess-1"),
        Step(
            Kind.CALL,
            "tools/call",
            persona="b",
            server="t",
            name="t__u",
            principal="sub=bob client_id=c2",
            outcome=Outcome.DENIED,
        ),
    ]
    for number, step in enumerate(steps):
        step.started -= 0.001 * (number + 1)
        log.record_step(step)
    log.event(
        Kind.SAMPLING,
        persona="a",
        name="route-1",
        server="s",
        result={"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.25},
    )


COMMANDS = [
    ["logs", "--json"],
    ["logs", "--json", "--persona", "a"],
    ["logs", "--json", "--principal", "alice"],
    ["logs", "--json", "--session", "sess-1"],
    ["logs", "--json", "--outcome", "denied"],
    ["logs", "--json", "--kind", "sampling"],
    ["logs", "--json", "--instance", "replica-1", "--since", "1d"],
    ["logs", "--json", "--until", "30d", "-n", "1"],
    ["logs"],
    ["stats", "--json"],
    ["stats"],
    ["stats", "--since", "1d", "--by", "tool"],
]


def test_logs_and_stats_print_the_same_from_postgresql(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_DB_PASSWORD", PASSWORD)
    configs = {}
    in_file = {"url": pg_url.replace(PASSWORD, "${AUDIT_DB_PASSWORD}")}  # as the README shows it
    for name, audit in (("sqlite", {"path": str(tmp_path / "cli.db")}), ("postgres", in_file)):
        configs[name] = config_with(tmp_path / f"{name}.toml", {**audit, "instance": "replica-1"})
        log = AuditLog(store_for(SettingsOf(audit)), instance="replica-1").start()
        history(log)
        log.close()
    runner = CliRunner()
    for command in COMMANDS:
        shown = {}
        for name, config in configs.items():
            result = runner.invoke(cli, [*command, "-c", str(config)])
            assert result.exit_code == 0, (command, result.output)
            shown[name] = _stable(result.stdout)
        # ms columns may differ by the clock; everything else must be equal, and there must be something
        assert shown["postgres"] == shown["sqlite"] != [], command
    found = runner.invoke(cli, ["logs", "--json", "--session", "sess-1", "-c", str(configs["postgres"])])
    names = [json.loads(line)["name"] for line in found.stdout.splitlines()]
    assert names == ["s__t", "s__t", "s://r"]  # a session reads first to last
    assert "\\x1b[31m" in found.stdout and "\x1b" not in found.stdout
    stats = json.loads(runner.invoke(cli, ["stats", "--json", "-c", str(configs["postgres"])]).stdout)
    assert next(r for r in stats["persona"] if r["key"] == "a")["errors"] == 1
    assert stats["sampling"]["persona"] == [
        {"key": "a", "requests": 1, "errors": 0, "tokens": 120, "cost_usd": 0.25}
    ]
    pruned = runner.invoke(cli, ["logs", "--prune", "30", "-c", str(configs["postgres"])])
    assert pruned.exit_code == 0 and "pruned 1 row older than 30 days" in pruned.output
    datasette = runner.invoke(cli, ["logs", "--datasette-metadata", "-c", str(configs["postgres"])])
    assert datasette.exit_code == 2 and "is for a SQLite audit log" in datasette.output


class SettingsOf:
    """`[audit]` settings as `store_for` reads them."""

    def __init__(self, audit: dict[str, Any]) -> None:
        self.url = audit.get("url")
        self.path = audit.get("path")


def _stable(stdout: str) -> list[Any]:
    """What `stdout` says, without what follows the clock: times, latencies and their percentiles,
    request ids (JSON documents parsed, tab-separated lines without those columns)."""
    try:
        return [_unclocked(json.loads(stdout))]  # `stats --json`: one document
    except ValueError:
        pass
    out: list[Any] = []
    dropped: set[int] = set()
    clocked = {"time", "ms", "p50 ms", "p95 ms"}
    for line in filter(None, stdout.splitlines()):
        try:
            out.append(_unclocked(json.loads(line)))
            continue
        except ValueError:
            cells = line.split("\t")
        if clocked & set(cells):  # a header: which columns to leave out below it
            dropped = {number for number, cell in enumerate(cells) if cell in clocked}
        out.append([cell for number, cell in enumerate(cells) if number not in dropped])
    return out


def _unclocked(value: Any) -> Any:
    if isinstance(value, dict):
        clocked = ("ts", "request_id", "latency_ms", "p50_ms", "p95_ms")
        return {k: _unclocked(v) for k, v in value.items() if k not in clocked}
    if isinstance(value, list):
        return [_unclocked(v) for v in value]
    return value


def test_logs_follow_sees_every_row_of_two_replicas_once(
    tmp_path: Path, pg_url: str, postgres_server: Postgres
) -> None:
    """Rows of two replicas writing at once, each printed once in id order, by a follower that also
    rode out a moment without its database."""
    config = config_with(tmp_path / "servers.toml", {"url": pg_url})
    first = AuditLog(PostgresStore(pg_url), instance="r1").start()
    first.event(Kind.CONFIG, name="start")
    first.close()
    with subprocess.Popen(
        mcpgw_command("logs", "-c", str(config), "--follow", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        try:
            assert follower.stdout is not None and follower.stderr is not None
            assert json.loads(follower.stdout.readline())["name"] == "start"
            with unreachable(postgres_server):
                while "the audit database stopped answering" not in (line := follower.stderr.readline()):
                    assert line, "the follower stopped"
            replicas = [AuditLog(PostgresStore(pg_url), instance=name).start() for name in ("r1", "r2")]

            def write(log: AuditLog) -> None:
                for number in range(150):
                    log.event(Kind.UPSTREAM, server=log.instance, name=f"n{number}")

            writers = [threading.Thread(target=write, args=(log,)) for log in replicas]
            for thread in writers:
                thread.start()
            for thread in writers:
                thread.join()
            for log in replicas:
                log.close()
            seen = [json.loads(follower.stdout.readline()) for _ in range(300)]
        finally:
            follower.terminate()
    assert len({row["id"] for row in seen}) == 300
    assert [row["id"] for row in seen] == sorted(row["id"] for row in seen)
    for name in ("r1", "r2"):
        assert [row["name"] for row in seen if row["instance"] == name] == [f"n{i}" for i in range(150)]


async def test_a_row_committed_late_by_one_replica_is_not_skipped_by_a_follower(
    pg_url: str, postgres_server: Postgres
) -> None:
    """Replica r1's batch has its id but is not committed (a trigger holds it on a lock the test
    owns) when replica r2 writes: r2 waits, so a follower reading `id > last` never passes r1's row."""
    opener = AuditLog(PostgresStore(pg_url)).start()
    opener.event(Kind.CONFIG, name="start")
    opener.close()
    with psycopg.connect(pg_url, autocommit=True) as test:
        test.execute(
            "create function held() returns trigger language plpgsql as $$ begin "
            "perform pg_advisory_lock(4242); perform pg_advisory_unlock(4242); return new; end $$"
        )
        test.execute(
            "create trigger held before insert on events for each row when (new.name = 'slow') "
            "execute function held()"
        )
        test.execute("select pg_advisory_lock(4242)")
        r1, r2 = (AuditLog(PostgresStore(pg_url), instance=name).start() for name in ("r1", "r2"))
        follower = open_for_reading(PostgresStore(pg_url))
        seen = follower.select("select * from events")
        try:
            r1.event(Kind.UPSTREAM, name="slow")
            await until(lambda: waiting(test) == 1)  # r1's row has its id, its transaction waits
            r2.event(Kind.UPSTREAM, name="quick")
            await until(lambda: waiting(test) == 2 or r2.written == 1)
            seen += query(follower, after_id=seen[-1]["id"], newest_first=False)
            assert r2.written == 0 and [row["name"] for row in seen] == ["start"]
        finally:
            test.execute("select pg_advisory_unlock(4242)")
            for log in (r1, r2):
                log.close()
        seen += query(follower, after_id=seen[-1]["id"], newest_first=False)
        follower.close()
    assert [row["name"] for row in seen] == ["start", "slow", "quick"]


def waiting(connection: psycopg.Connection[Any]) -> int:
    """Transactions of this database waiting for an advisory lock."""
    (count,) = connection.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and not granted"
    ).fetchone() or (0,)
    return int(count)


def test_a_table_an_older_version_made_gets_the_missing_columns(
    tmp_path: Path, pg_url: str, postgres_server: Postgres
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            "create table events (id bigint generated always as identity primary key, ts text, "
            "request_id text, kind text, name text, outcome text)"
        )
        db.execute(
            "insert into events (ts, request_id, kind, name, outcome) values (%s, 'old', 'call', 'x', 'ok')",
            [NOW.isoformat()],
        )
    log = AuditLog(PostgresStore(pg_url), instance="new").start()
    log.event(Kind.CONFIG, name="after")
    log.close()
    rows = postgres_server.rows(pg_url)
    assert [(r["name"], r["instance"]) for r in rows] == [("x", None), ("after", "new")]
    assert set(rows[0]) == {"id", *COLUMNS}
    config = config_with(tmp_path / "servers.toml", {"url": pg_url})
    result = CliRunner().invoke(cli, ["logs", "--json", "--session", "none", "-c", str(config)])
    assert result.exit_code == 0 and "no rows match" in result.output


async def test_with_durable_all_a_replica_killed_after_answering_has_lost_no_row(
    tmp_path: Path, pg_url: str, postgres_server: Postgres
) -> None:
    """`[audit] durable = "all"`: every answered call's row is in PostgreSQL, though the gateway was
    killed with SIGKILL the moment the last answer arrived (16 calls in flight, sharing commits)."""
    port = free_port()
    config = config_with(tmp_path / "servers.toml", {"url": pg_url, "durable": "all"})
    answered: list[str] = []

    async def call(client: Client, number: int) -> None:
        await client.call_tool("up__echo", {"message": f"m{number}"})
        answered.append(f"m{number}")

    serve = mcpgw_command(
        "serve", "-c", str(config), "-t", "http", "--port", str(port), "--log-level", "warning"
    )
    with background(serve, port=port) as process:
        with anyio.fail_after(60):
            while httpx.get(f"http://127.0.0.1:{port}/healthz", verify=TLS).status_code != 200:
                await anyio.sleep(0.05)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            for start in range(0, 48, 16):
                async with anyio.create_task_group() as group:
                    for number in range(start, start + 16):
                        group.start_soon(call, client, number)
            process.kill()
        process.wait(10)
    rows = postgres_server.rows(pg_url, "select arguments from events where kind = 'call'")
    stored = {json.loads(row["arguments"])["message"] for row in rows}
    assert len(answered) == 48 and set(answered) <= stored


def test_replicas_sharing_a_registry_path_are_told_apart(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICA", "replica-7")
    named = {}
    for given in (None, "${REPLICA}"):
        settings = AuditSettings(url=pg_url, instance=given, retention_days=0)
        log = open_for(settings, source="/etc/mcpgw/servers.toml", instance="/etc/mcpgw/servers.toml")
        assert log is not None
        log.close()
        named[given] = log.instance
    assert named == {None: f"{socket.gethostname()}:/etc/mcpgw/servers.toml", "${REPLICA}": "replica-7"}


# --- budgets -------------------------------------------------------------------------------------


def test_budgets_start_from_the_spend_in_postgresql(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    log = AuditLog(store).start()
    for _ in range(2):
        log.event(
            Kind.SAMPLING,
            persona="p",
            name="r",
            result={"input_tokens": 60, "output_tokens": 10, "cost_usd": 0.5},
        )
    log.close()
    today = datetime.now(UTC).date().isoformat()
    assert spend.spent_by(store, "p", since=today) == (140.0, 1.0)
    budgets = Budgets(SamplingSettings(personas={"p": {"tokens_per_day": 140}}), audit=store)
    assert budgets.spent("p") == (140, 1.0)
    with pytest.raises(SamplingRefused, match="140 of 140 tokens"):
        budgets.reserve("p", tokens=1, usd=0)


# --- a database that goes away -------------------------------------------------------------------


async def test_an_unreachable_database_does_not_stop_calls_and_loses_nothing(
    pg_url: str, postgres_server: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcpgw.audit")
    log = AuditLog(PostgresStore(pg_url)).start()
    try:
        async with (
            served(registry(), {"up": TestUpstream()}, audit=log) as gateway,
            gateway_client(gateway) as client,
        ):
            await client.call_tool("up__echo", {"message": "before"})
            await until(lambda: log.written >= 2)  # the writer is connected
            with unreachable(postgres_server):
                await client.call_tool("up__echo", {"message": "during 0"})
                await until(lambda: "writing to postgresql://mcpgw@127.0.0.1" in caplog.text)
                written = log.written
                for number in range(1, 20):
                    await client.call_tool("up__echo", {"message": f"during {number}"})
                assert log.written == written
            await until(lambda: "writing works again" in caplog.text)
            await client.call_tool("up__echo", {"message": "after"})
    finally:
        log.close()
    messages = [
        json.loads(r["arguments"])["message"] for r in postgres_server.rows(pg_url) if r["kind"] == "call"
    ]
    assert messages == ["before", *(f"during {n}" for n in range(20)), "after"]
    assert log.dropped == 0


async def test_past_the_buffer_the_oldest_rows_are_dropped_counted_and_said(
    pg_url: str, postgres_server: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    # Its own level: a test before it in the same worker may have left `mcpgw` at ERROR.
    caplog.set_level(logging.WARNING, logger="mcpgw.audit")
    log = AuditLog(PostgresStore(pg_url), max_buffer=5).start()
    try:
        log.event(Kind.CONFIG, name="first")
        await until(lambda: log.written == 1)
        with unreachable(postgres_server):
            for number in range(20):
                log.event(Kind.UPSTREAM, name=f"n{number}")
            await until(lambda: log.dropped == 15)
            assert "5 rows are waiting for postgresql://" in caplog.text
            assert "the oldest are dropped" in caplog.text
        # Back: the writer's own retry writes the five kept rows and says what was lost (waited for
        # here, not left to the last flush at close, which says it in its own words).
        await until(lambda: log.written == 6)
    finally:
        log.close()
    assert [r["name"] for r in postgres_server.rows(pg_url)] == ["first", *(f"n{n}" for n in range(15, 20))]
    assert "15 rows dropped meanwhile" in caplog.text


# --- a database that cannot be used --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://mcpgw:{pw}@127.0.0.1:notaport/mcpgw", 'invalid integer value "notaport"'),
        ("postgresql://mcpgw:{pw}%zz@127.0.0.1/mcpgw", "not valid: invalid percent-encoded token"),
        ("postgresql://mcpgw:{pw}@127.0.0.1:{unused}/mcpgw", "Connection refused"),
        (
            "postgresql://mcpgw:wrong-{pw}@127.0.0.1:{port}/mcpgw",
            'password authentication failed for user "mcpgw"',
        ),
        ("postgresql://mcpgw:{pw}@127.0.0.1:{port}/nosuchdb", 'database "nosuchdb" does not exist'),
    ],
    ids=["port", "encoding", "unreachable", "credentials", "database"],
)
def test_a_database_that_cannot_be_used_is_a_clear_error_at_start(
    url: str, reason: str, postgres_server: Postgres
) -> None:
    url = url.format(pw=PASSWORD, port=postgres_server.port, unused=free_port())
    with pytest.raises(ConfigError) as caught:
        AuditLog(PostgresStore(url))
    message = str(caught.value)
    assert message.startswith("audit.url: ") and reason in message, message
    assert PASSWORD not in message


def test_serve_and_logs_stop_with_the_reason(tmp_path: Path, postgres_server: Postgres) -> None:
    config = config_with(tmp_path / "servers.toml", {"url": postgres_server.url(password="wrong")})
    done = run_mcpgw("serve", "--config", str(config))
    assert done.returncode == 2
    assert "audit.url: cannot use the audit database postgresql://mcpgw@127.0.0.1:" in done.stderr
    assert "password authentication failed" in done.stderr and "wrong" not in done.stderr
    result = CliRunner().invoke(cli, ["logs", "-c", str(config)])
    assert result.exit_code == 2 and "password authentication failed" in result.output


@pytest.mark.parametrize(
    ("audit", "reason"),
    [
        ({"url": "mysql://u:sekrit@h/db"}, "must be a PostgreSQL URL"),
        ({"url": "postgresql://u:sekrit@h/db", "path": "/tmp/x.db"}, "not both"),
    ],
)
def test_a_url_that_is_not_postgresql_is_refused_when_the_file_is_read(
    audit: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        registry(audit=audit)
    assert "audit" in str(caught.value) and "sekrit" not in str(caught.value)


def test_a_gateway_without_a_url_never_imports_the_driver(tmp_path: Path) -> None:
    """The gateway's one way to its store (`open_for`, as `build_gateway` calls it), in a fresh process."""
    code = (
        "import sys; from mcpgw import audit; from mcpgw.config import AuditSettings; "
        f"audit.open_for(AuditSettings(path={str(tmp_path / 'lite.db')!r}), source='t').close()"
    )
    assert not {m for m in modules_after(code) if m.startswith("psycopg")}
    assert (tmp_path / "lite.db").exists()
