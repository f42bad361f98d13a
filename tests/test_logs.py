"""The gateway's own log as JSON lines: every line one object, with the request's fields where known."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from conftest import (
    PROCESS_LIMIT,
    SERVERS,
    free_port,
    mcpgw_command,
    run_mcpgw,
    stop_group,
    upstream_server,
    wait_for_port,
)
from mcpgw.observe import context
from mcpgw.observe.logs import JsonFormatter

pytestmark = pytest.mark.anyio


def lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as the JSON object it must be."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
"""Standard library only: it starts in milliseconds where a FastMCP upstream takes a CPU second. For
the tests that only need a server to be ready (the first needs the FastMCP one's stderr lines)."""


def registry(home: Path, *, up: dict[str, Any] | None = None, **telemetry: Any) -> Path:
    config = home / "servers.toml"
    document: dict[str, Any] = {
        "servers": {"up": up or upstream_server()},
        "personas": {"ops": {"allow": ["up__echo"]}},
        "audit": {"path": str(home / "audit.db")},
    }
    if telemetry:
        document["telemetry"] = telemetry
    config.write_text(tomlkit.dumps(document))
    return config


async def test_json_lines_carry_request_id_persona_and_server(tmp_path: Path) -> None:
    config = registry(tmp_path, log_format="json")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcpgw", "serve", "-c", str(config), "--persona", "ops", "--log-level", "debug"],
        env=dict(os.environ),
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:  # type: ignore[arg-type]
            await client.call_tool("up__echo", {"message": "hi"})
    records = lines(log.read_text())  # every line parses: nothing else was written

    [access] = [r for r in records if r["message"].startswith("tools/call up__echo: ok")]
    with sqlite3.connect(tmp_path / "audit.db") as db:
        [(request_id,)] = db.execute("select request_id from events where kind = 'call'").fetchall()
    assert access["request_id"] == request_id  # a log line joins its audit row
    assert (access["persona"], access["server"], access["trace_id"]) == ("ops", "up", None)
    assert access["level"] == "debug" and access["logger"] == "mcpgw.server"

    # An upstream's own lines (its start, its stderr) name it, outside any request.
    [ready] = [r for r in records if r["message"].startswith("upstream up ready")]
    assert (ready["server"], ready["request_id"]) == ("up", None)
    relayed = [r for r in records if r["logger"] == "mcpgw.upstream.up"]
    assert relayed and all(r["server"] == "up" for r in relayed)
    assert {"ts", "level", "logger", "message", "request_id", "trace_id", "persona", "server"} <= set(ready)


def test_http_stderr_is_json_lines_only_banner_and_uvicorn_included(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "stderr.log"
    command = mcpgw_command(
        "serve", "-c", str(registry(tmp_path, up=TINY)), "-t", "http", "--port", str(port)
    )
    with log.open("w") as errlog:
        process = subprocess.Popen(
            [*command, "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
            start_new_session=True,
        )
        try:
            wait_for_port(port, process=process)
            deadline = time.monotonic() + PROCESS_LIMIT
            while '"serving ' not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn's own warning
                assert sock.recv(100).startswith(b"HTTP/1.1 400")
        finally:
            stop_group(process)
    records = lines(log.read_text())
    [banner] = [r for r in records if r["message"].startswith("serving ")]
    assert f"http://127.0.0.1:{port}/mcp: 1 of 1 servers ready" in banner["message"]
    assert any(r["logger"] == "uvicorn.error" and "Invalid HTTP request" in r["message"] for r in records)


def test_the_flag_overrides_the_setting(tmp_path: Path) -> None:
    from_setting = run_mcpgw("serve", "-c", str(registry(tmp_path, up=TINY, log_format="json")))
    assert from_setting.returncode == 0, from_setting.stderr
    assert any(r["message"].startswith("serving") for r in lines(from_setting.stderr))

    text = run_mcpgw(
        "serve", "-c", str(registry(tmp_path, up=TINY, log_format="json")), "--log-format", "text"
    )
    assert text.returncode == 0 and "serving" in text.stderr
    with pytest.raises(json.JSONDecodeError):
        lines(text.stderr)

    flag = run_mcpgw("serve", "-c", str(registry(tmp_path, up=TINY)), "--log-format", "json")
    assert any(r["message"].startswith("serving") for r in lines(flag.stderr))

    bad = run_mcpgw("serve", "-c", str(registry(tmp_path)), "--log-format", "xml")
    assert bad.returncode == 2 and "'xml' is not one of 'text', 'json'" in bad.stderr


def test_an_exception_stays_on_its_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "mcpgw.x", logging.ERROR, __file__, 1, "failed: %s", ("a\nb",), sys.exc_info()
        )
    with (
        context.bound(trace_id="4bf92f3577b34da6a3ce929d0e0e4736"),
        context.serving(request_id="r1", persona=None),
    ):
        context.routed(server="up", tool="up__echo")
        line = JsonFormatter().format(record)
    assert context.current().trace_id is None  # the block's fields end with it
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed: a\nb"
    assert "ValueError: bad\nthing" in parsed["exception"]
    assert (parsed["request_id"], parsed["server"], parsed["persona"]) == ("r1", "up", None)
    assert parsed["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"  # known before, carried in
