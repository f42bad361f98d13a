"""`mcpgw logs` and `mcpgw stats` as a user runs them: times, pruning, following, output, columns.

Rows are put in a real audit database (the schema the gateway makes) or written by a real
`mcpgw serve`; the commands run through click's runner or as the real `mcpgw` process.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlite_utils
from click.testing import CliRunner

from conftest import SERVERS, gateway_stdio, lite_server, mcpgw_command, write_registry
from mcpgw.audit import COLUMNS, ensure_schema
from mcpgw.cli import cli

NOW = datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def put(db_path: Path, *rows: dict[str, Any]) -> None:
    db = sqlite_utils.Database(db_path)
    ensure_schema(db)
    base = dict.fromkeys(COLUMNS)
    db["events"].insert_all(
        [{**base, "kind": "call", "outcome": "ok", "request_id": f"r{i}"} | row for i, row in enumerate(rows)]
    )


def ids(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as db:
        return [row[0] for row in db.execute("select request_id from events order by id")]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_registry(tmp_path / "servers.toml", {"up": lite_server()})


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time 5:30 ahead of UTC, so local and UTC readings of a time cannot be confused."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def logs(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["logs", "-c", str(config), *args])


def found(config: Path, *args: str) -> list[str]:
    result = logs(config, "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line)["request_id"] for line in result.stdout.splitlines()]


# --- times ---------------------------------------------------------------------------------------


def test_relative_times_select_by_age(config: Path, audit_db: Path) -> None:
    put(
        audit_db,
        {"ts": iso(NOW - timedelta(days=3)), "request_id": "3d"},
        {"ts": iso(NOW - timedelta(hours=5)), "request_id": "5h"},
        {"ts": iso(NOW - timedelta(minutes=10)), "request_id": "10m"},
    )
    assert found(config, "--since", "1h") == ["10m"]
    assert found(config, "--since", "2d") == ["10m", "5h"]
    assert found(config, "--since", "30 minutes ago") == ["10m"]
    assert found(config, "--since", "1w") == ["10m", "5h", "3d"]
    assert found(config, "--until", "1h") == ["5h", "3d"]
    assert found(config, "--since", "2d", "--until", "1h") == ["5h"]


def test_iso_times_are_local_unless_they_say_utc(config: Path, audit_db: Path, kolkata: None) -> None:
    # 2026-11-30 01:19 in Kolkata is 2026-11-29 19:49 UTC.
    put(
        audit_db,
        {"ts": "2026-11-29T19:00:00.000000+00:00", "request_id": "before"},
        {"ts": "2026-11-29T20:00:00.000000+00:00", "request_id": "after"},
        {"ts": "2026-11-30T02:00:00.000000+00:00", "request_id": "later"},
    )
    assert found(config, "--since", "2026-11-30 01:19") == ["later", "after"]
    assert found(config, "--since", "2026-11-30T01:19") == ["later", "after"]
    assert found(config, "--since", "2026-11-30T01:19Z") == ["later"]
    assert found(config, "--since", "2026-11-30T01:19+00:00") == ["later"]
    # A date is local midnight; as --until, the end of that day.
    assert found(config, "--since", "2026-11-30", "--until", "2026-11-30") == ["later", "after", "before"]
    assert found(config, "--until", "2026-11-29") == []


def test_today_and_yesterday(config: Path, audit_db: Path) -> None:
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    put(
        audit_db,
        {"ts": iso(midnight - timedelta(hours=30)), "request_id": "older"},
        {"ts": iso(midnight - timedelta(hours=1)), "request_id": "yesterday"},
        {"ts": iso(midnight + timedelta(seconds=1)), "request_id": "today"},
    )
    assert found(config, "--since", "today") == ["today"]
    assert found(config, "--since", "yesterday") == ["today", "yesterday"]
    assert found(config, "--since", "yesterday", "--until", "yesterday") == ["yesterday"]


@pytest.mark.parametrize("bad", ["1x", "last week", "-1h", "2026-13-01", "2026-11-30 25:00", "soon", ""])
@pytest.mark.parametrize("command", ["logs", "stats"])
def test_a_bad_time_is_a_clear_error(config: Path, audit_db: Path, bad: str, command: str) -> None:
    put(audit_db, {"ts": iso(NOW)})
    result = CliRunner().invoke(cli, [command, "-c", str(config), "--since", bad])
    assert result.exit_code == 2
    assert "Invalid value for '--since'" in result.output and "is not a time" in result.output
    assert "1h, 2d" in result.output  # it says what would do
    assert ids(audit_db) == ["r0"]


def test_an_empty_time_range_is_an_error(config: Path, audit_db: Path) -> None:
    put(audit_db, {"ts": iso(NOW)})
    result = logs(config, "--since", "1h", "--until", "2d")
    assert result.exit_code == 2 and "--until is not after --since" in result.output


def test_stats_since_counts_only_later_rows(config: Path, audit_db: Path) -> None:
    put(
        audit_db,
        {"ts": iso(NOW - timedelta(days=2)), "persona": "old"},
        {"ts": iso(NOW - timedelta(minutes=1)), "persona": "new"},
    )
    result = CliRunner().invoke(cli, ["stats", "-c", str(config), "--json", "--since", "1h"])
    assert result.exit_code == 0, result.output
    assert [row["key"] for row in json.loads(result.stdout)["persona"]] == ["new"]


# --- pruning -------------------------------------------------------------------------------------


def test_prune_zero_needs_yes(config: Path, audit_db: Path) -> None:
    put(audit_db, {"ts": iso(NOW)}, {"ts": iso(NOW - timedelta(days=40))})
    refused = logs(config, "--prune", "0")
    assert refused.exit_code == 2 and "deletes every row" in refused.output and "--yes" in refused.output
    assert ids(audit_db) == ["r0", "r1"]
    done = logs(config, "--prune", "0", "--yes")
    assert done.exit_code == 0 and "pruned 2 rows" in done.output
    assert ids(audit_db) == []


@pytest.mark.parametrize("bad", ["-1", "-0.5", "nan", "inf", "a week"])
def test_prune_refuses_what_is_not_a_number_of_days(config: Path, audit_db: Path, bad: str) -> None:
    put(audit_db, {"ts": iso(NOW - timedelta(days=400))})
    for extra in ([], ["--yes"]):
        result = logs(config, "--prune", bad, *extra)
        assert result.exit_code == 2, result.output
        assert "'--prune'" in result.output
    assert ids(audit_db) == ["r0"]


def test_prune_keeps_newer_rows(config: Path, audit_db: Path) -> None:
    put(audit_db, {"ts": iso(NOW)}, {"ts": iso(NOW - timedelta(days=40))})
    result = logs(config, "--prune", "30")
    assert result.exit_code == 0 and "pruned 1 row older than 30 days" in result.output
    assert ids(audit_db) == ["r0"]


# --- what is printed -----------------------------------------------------------------------------


def test_no_rows_says_so(config: Path, audit_db: Path) -> None:
    put(audit_db, {"ts": iso(NOW), "persona": "a"})
    for extra in ([], ["--json"]):
        result = logs(config, "--persona", "nobody", *extra)
        assert result.exit_code == 0
        assert result.stdout == ""
        assert "no rows match these filters" in result.stderr
    stats = CliRunner().invoke(cli, ["stats", "-c", str(config), "--since", "2099-01-01"])
    assert stats.exit_code == 0 and stats.stdout == "" and "no rows since then" in stats.stderr


def test_kind_filter(config: Path, audit_db: Path) -> None:
    put(
        audit_db,
        {"ts": iso(NOW), "kind": "call", "request_id": "c"},
        {"ts": iso(NOW), "kind": "sampling", "request_id": "s"},
        {"ts": iso(NOW), "kind": "list", "request_id": "l"},
    )
    assert found(config, "--kind", "sampling") == ["s"]
    assert found(config, "--kind", "list") == ["l"]
    bad = logs(config, "--kind", "calls")
    assert bad.exit_code == 2 and "'calls' is not one of" in bad.output


def test_not_a_terminal_gets_one_plain_line_per_row(config: Path, audit_db: Path) -> None:
    error = "upstream 'up': " + "a long reason " * 20
    put(
        audit_db,
        {"ts": iso(NOW - timedelta(seconds=1)), "name": "up__echo", "server": "up", "latency_ms": 3.25},
        {"ts": iso(NOW), "name": "up__fail", "server": "up", "outcome": "error", "error": error},
    )
    result = logs(config)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # a header and two rows: nothing wrapped, no box drawing
    header = lines[0].split("\t")
    assert header == ["time", "kind", "persona", "server", "name", "outcome", "ms", "client", "error"]
    newest = dict(zip(header, lines[1].split("\t"), strict=True))
    assert newest["name"] == "up__fail" and newest["error"] == error
    older = dict(zip(header, lines[2].split("\t"), strict=True))
    assert older["ms"] == "3.2" or older["ms"] == "3.3"
    assert not any(char in result.stdout for char in "│┃━─")


def test_follow_prints_one_header_and_rows_as_they_come(config: Path, audit_db: Path) -> None:
    put(audit_db, {"ts": iso(NOW), "name": "first"})
    with subprocess.Popen(
        mcpgw_command("logs", "-c", str(config), "--follow"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        try:
            assert follower.stdout is not None
            seen = [follower.stdout.readline(), follower.stdout.readline()]
            for batch in range(3):
                put(
                    audit_db,
                    {"ts": iso(datetime.now(UTC)), "name": f"batch{batch}", "request_id": f"b{batch}"},
                )
                seen.append(follower.stdout.readline())
        finally:
            follower.terminate()
    header = seen[0].rstrip("\n").split("\t")
    assert header[:2] == ["time", "instance"] and {"principal", "tokens", "usd"} <= set(header)
    names = [dict(zip(header, line.rstrip("\n").split("\t"), strict=True))["name"] for line in seen[1:]]
    assert names == ["first", "batch0", "batch1", "batch2"]


# --- columns: instance, sampling spend, search mode ----------------------------------------------


def test_rows_name_the_gateway_that_wrote_them(tmp_path: Path, audit_db: Path) -> None:
    # tiny.py: an echo, standard library only (starts in milliseconds, not a FastMCP CPU second)
    tiny = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
    first = write_registry(tmp_path / "one.toml", {"up": tiny})
    second = tmp_path / "two.toml"
    second.write_text(first.read_text() + '\n[audit]\ninstance = "laptop-b"\n')

    async def call(config: Path) -> None:
        with anyio.fail_after(60):
            async with gateway_stdio(config) as client:
                await client.call_tool("up__echo", {"message": "hi"})

    anyio.run(call, first)
    anyio.run(call, second)
    with sqlite3.connect(audit_db) as db:
        instances = {row[0] for row in db.execute("select instance from events where kind = 'call'")}
    assert instances == {str(first.resolve()), "laptop-b"}
    rows = [
        json.loads(line)
        for line in logs(first, "--json", "--kind", "call", "--instance", "laptop-b").stdout.splitlines()
    ]
    assert [(row["instance"], row["name"]) for row in rows] == [("laptop-b", "up__echo")]
    table = logs(first, "--kind", "call").stdout
    assert table.splitlines()[0].split("\t")[1] == "instance" and "laptop-b" in table
    per = json.loads(
        CliRunner().invoke(cli, ["stats", "-c", str(first), "--json", "--by", "instance"]).stdout
    )
    assert {row["key"] for row in per["instance"]} >= {str(first.resolve()), "laptop-b"}


SCHEMA_1 = [
    column
    for column in COLUMNS
    if column not in ("instance", "input_tokens", "output_tokens", "cost_usd", "session", "parent")
]


def test_an_older_database_gets_the_spend_columns_filled_in(config: Path, audit_db: Path) -> None:
    """Schema 1 kept tokens and cost only inside a JSON string: opening it copies them to columns (and
    adds every later column: `session`, empty on old rows)."""
    db = sqlite_utils.Database(audit_db)
    db["events"].create({"id": int, **{column: COLUMNS[column] for column in SCHEMA_1}}, pk="id")
    old = dict.fromkeys(SCHEMA_1) | {"ts": iso(NOW), "kind": "sampling", "outcome": "ok", "persona": "p"}
    db["events"].insert_all(
        [
            old
            | {
                "name": "claude",
                "result": json.dumps({"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25}),
            },
            old | {"name": "claude", "result": "not json"},
            old | {"kind": "call", "name": "up__echo", "result": json.dumps({"input_tokens": 99})},
        ]
    )
    db.conn.close()
    result = CliRunner().invoke(cli, ["stats", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sampling"]["route"] == [
        {"key": "claude", "requests": 2, "errors": 0, "tokens": 15, "cost_usd": 0.25}
    ]
    with sqlite3.connect(audit_db) as check:
        spend = check.execute(
            "select kind, input_tokens, output_tokens, cost_usd from events order by id"
        ).fetchall()
        version = check.execute("select value from meta where key = 'schema_version'").fetchone()[0]
    assert spend == [("sampling", 10, 5, 0.25), ("sampling", None, None, None), ("call", None, None, None)]
    assert version == "4"
    assert logs(config, "--session", "any").stderr.strip() == "no rows match these filters"
    assert logs(config, "--parent", "any").stderr.strip() == "no rows match these filters"  # schema 4
    rows = [json.loads(line) for line in logs(config, "--json", "--kind", "sampling").stdout.splitlines()]
    assert [(row["input_tokens"], row["cost_usd"]) for row in rows] == [(None, None), (10, 0.25)]
    lines = [line.split("\t") for line in logs(config, "--kind", "sampling").stdout.splitlines()]
    shown = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    assert [(row["tokens"], row["usd"]) for row in shown] == [("", ""), ("15", "0.250000")]


def test_sampling_rows_are_written_with_spend_columns(tmp_path: Path) -> None:
    from mcpgw.audit import AuditLog, Kind

    path = tmp_path / "spend.db"
    log = AuditLog(path, instance="here").start()
    log.event(
        Kind.SAMPLING,
        name="route-a",
        persona="p",
        result={"input_tokens": 7, "output_tokens": 3, "cost_usd": 0.5},
    )
    log.event(Kind.SAMPLING, name="route-a", persona="p", result={"input_tokens": "many", "cost_usd": True})
    log.event(Kind.UPSTREAM, name="ready", server="up")
    log.close()
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "select instance, input_tokens, output_tokens, cost_usd from events order by id"
        ).fetchall()
    assert rows == [("here", 7, 3, 0.5), ("here", None, None, None), ("here", None, None, None)]


def test_stats_off_a_terminal_prints_plain_lines(config: Path, audit_db: Path) -> None:
    put(
        audit_db,
        {"ts": iso(NOW), "persona": "a", "server": "up", "name": "up__echo", "latency_ms": 2.0},
        {
            "ts": iso(NOW),
            "persona": "a",
            "server": "up",
            "name": "up__fail",
            "outcome": "error",
            "latency_ms": 4.0,
        },
    )
    result = CliRunner().invoke(cli, ["stats", "-c", str(config)])
    assert result.exit_code == 0, result.output
    blocks = [block.splitlines() for block in result.stdout.strip().split("\n\n")]
    assert [block[0] for block in blocks] == ["per persona", "per server", "per tool"]
    assert blocks[2][1:] == [
        "tool\tcalls\terrors\tp50 ms\tp95 ms",
        "up__echo\t1\t0\t2.0\t2.0",
        "up__fail\t1\t1\t4.0\t4.0",
    ]
    assert not any(char in result.stdout for char in "│┃━─")


@pytest.mark.parametrize("extra", [["--persona", "a"], ["--kind", "call"], ["--since", "1h"], ["--follow"]])
def test_prune_takes_no_filters(config: Path, audit_db: Path, extra: list[str]) -> None:
    """`--prune 30 --persona a` would delete every persona's old rows: refused, nothing deleted."""
    put(audit_db, {"ts": iso(NOW - timedelta(days=40)), "persona": "b"})
    result = logs(config, "--prune", "30", *extra)
    assert result.exit_code == 2 and "--prune deletes every row older than DAYS; it takes no" in result.output
    assert extra[0] in result.output
    assert ids(audit_db) == ["r0"]


def test_follow_on_a_terminal_keeps_columns_under_one_header(config: Path, audit_db: Path) -> None:
    import os
    import pty
    import select

    put(audit_db, {"ts": iso(NOW), "name": "first", "server": "up", "error": "x" * 200})
    leader, follower_tty = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "LINES": "50"}
    follower = subprocess.Popen(
        mcpgw_command("logs", "-c", str(config), "--follow"),
        stdin=subprocess.DEVNULL,
        stdout=follower_tty,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    os.close(follower_tty)
    seen = b""
    try:
        for batch in range(2):
            put(audit_db, {"ts": iso(datetime.now(UTC)), "name": f"batch{batch}", "request_id": f"b{batch}"})
        deadline = time.monotonic() + 120  # a hang guard only
        while seen.count(b"\n") < 4 and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                seen += os.read(leader, 65536)
    finally:
        follower.terminate()
        follower.wait(timeout=60)
        os.close(leader)
    lines = seen.decode().replace("\r", "").splitlines()[:4]
    header = "time instance kind persona principal server name outcome ms client tokens usd error"
    assert lines[0].split() == header.split()
    kind_at = lines[0].index("kind")
    assert [line[kind_at:].split()[0] for line in lines[1:]] == ["call", "call", "call"]
    name_at = lines[0].index("name")
    assert [line[name_at:].split()[0] for line in lines[1:]] == ["first", "batch0", "batch1"]
    error_at = lines[0].index("error")
    assert lines[1][error_at:] == "x" * 200  # the last column is never cut
    assert "\t" not in "".join(lines) and "│" not in "".join(lines)


def test_follow_keeps_to_since_when_nothing_matched_yet(config: Path, audit_db: Path) -> None:
    put(audit_db, {"ts": iso(NOW - timedelta(days=3)), "request_id": "old"})
    with subprocess.Popen(
        mcpgw_command("logs", "-c", str(config), "--follow", "--json", "--since", "1h"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        try:
            put(audit_db, {"ts": iso(datetime.now(UTC)), "request_id": "new"})
            assert follower.stdout is not None
            assert json.loads(follower.stdout.readline())["request_id"] == "new"
        finally:
            follower.terminate()
