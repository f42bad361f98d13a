"""The admin console on an audit log on PostgreSQL: what a gateway with `[audit] url` logs is what
its console shows (Traffic, its live stream, a request's detail, Servers' latency, Spend), and a
database that cannot be reached is said on the page, not a server error.

One real gateway process (its console is the serving gateway's own, as deployed) on the session's
PostgreSQL; no browser: the pages are rendered on the server, so an HTTP client reads what a
browser would show. Without `[auth]`, the console serves loopback visitors in development mode.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import httpx
import pytest
import tomlkit
from fastmcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Mount

from conftest import LLM_PRICES, SERVERS, StandIn, background, free_port, mcpgw_command, wait_all_ready
from mcpgw.server.console import traffic
from mcpgw.server.console.access import Access, Visitor
from mcpgw.server.console.app import console_app
from mcpgw.server.console.context import Console
from parity import registry
from pg import Postgres

KEY_VAR = "MCPGW_CONSOLE_PG_TEST_LLM_KEY"
HANG = 60.0
"""Seconds a wait may take: a hang guard, never a speed limit."""


async def test_the_console_shows_a_call_logged_to_postgresql(
    tmp_path: Path, pg_url: str, postgres_server: Postgres, llm: StandIn
) -> None:
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    config = tmp_path / "servers.toml"
    config.write_text(
        tomlkit.dumps(
            {
                "servers": {"modern": {"command": sys.executable, "args": [str(SERVERS / "modern.py")]}},
                "personas": {"reader": {"allow": ["*"]}},
                "sampling": {
                    "routes": {
                        "main": llm.route("good", key_env=KEY_VAR, **LLM_PRICES),
                    },
                    "personas": {"reader": {"tokens_per_day": 5000}},
                },
                "audit": {"url": pg_url},
            }
        )
    )
    serve = mcpgw_command("serve", "-c", str(config), "-t", "http", "--port", str(port))
    # `mcpgw admin` (the console beside a stdio gateway) on the same registry, started meanwhile.
    admin_port = free_port()
    admin_command = mcpgw_command("admin", "-c", str(config), "--port", str(admin_port))
    with (
        background([*serve, "--log-level", "warning"], port=port, env={KEY_VAR: "sk-test"}),
        background(admin_command, port=admin_port),
    ):
        wait_all_ready(gateway, timeout=HANG)
        async with Client(f"{gateway}/personas/reader/mcp") as client:
            result = await client.call_tool("modern__summarize", {"text": "the console"})
        assert not result.is_error, result
        # The call's row is committed by the writer thread shortly after the answer: poll for it.
        sql = "select request_id, latency_ms from events where kind = 'call' and name = 'modern__summarize'"
        deadline = time.monotonic() + HANG
        while not (calls := postgres_server.rows(pg_url, sql)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (call,) = calls
        (spent,) = postgres_server.rows(
            pg_url,
            "select sum(input_tokens + output_tokens) as tokens from events where kind = 'sampling'",
        )
        async with httpx.AsyncClient(base_url=f"{gateway}/admin", timeout=HANG) as admin:
            traffic = (await admin.get("/traffic", params={"tool": "modern__summarize"})).text
            assert f"/admin/traffic/request/{call['request_id']}" in traffic
            assert "modern__summarize" in traffic.split("<table id=traffic>", 1)[1]

            async with admin.stream("GET", "/traffic/stream", params={"after": 0}) as stream:
                lines = stream.aiter_lines()
                async for line in lines:
                    if line == "event: row":
                        first = json.loads((await anext(lines)).removeprefix("data: "))
                        break
            assert first["kind"] == "config" and first["id"] == 1  # the gateway's first row, from PostgreSQL

            detail = await admin.get(f"/traffic/request/{call['request_id']}")
            assert detail.status_code == 200
            assert "1 sampling request it caused" in detail.text and "row-sampling" in detail.text

            servers = (await admin.get("/servers")).text
            row = servers.split("<strong>modern</strong>", 1)[1].split("</tr>", 1)[0]
            assert "1 / 0" in row  # calls / errors over the last day
            assert re.search(r"\d+\.\d / \d+\.\d", row)  # p50 / p95 ms

            # A filter no row matches: the stream starts after the newest row (`select max(id)`).
            (newest,) = postgres_server.rows(pg_url, "select max(id) as id from events")
            nothing = (await admin.get("/traffic", params={"tool": "nothing"})).text
            assert f"tool=nothing&amp;after={newest['id']}" in nothing

            spend = (await admin.get("/spend")).text
            reader = spend.split("<table id=spend>", 1)[1].split("reader", 1)[1].split("</tr>", 1)[0]
            assert spent["tokens"] > 0 and f"{spent['tokens']:,.0f} of 5,000" in reader

        # `mcpgw admin` reads the same database.
        beside = httpx.get(f"http://127.0.0.1:{admin_port}/admin/traffic", timeout=HANG).text
        assert f"/admin/traffic/request/{call['request_id']}" in beside


async def test_an_unreachable_audit_database_is_said_on_each_page(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://mcpgw:secret-pw@127.0.0.1:{closed}/mcpgw"
    from mcpgw.assembly import build_gateway

    built = build_gateway(registry(audit={"url": url}), registry_path=None, audit=None)
    console = Console(built.gateway, None, None)
    app = Starlette(routes=[Mount("/admin", app=console_app(console))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1/admin") as admin:
        for path, status in (
            ("/servers", 200),
            ("/traffic", 200),
            ("/spend", 200),
            ("/traffic/request/abc", 503),
        ):
            page = await admin.get(path)
            assert page.status_code == status, (path, page.text)
            assert f"cannot read the audit log (postgresql://mcpgw@127.0.0.1:{closed}/mcpgw)" in page.text
            assert "secret-pw" not in page.text
    # httpx's ASGI transport waits for a whole body, and a stream has none: read the response's own.
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/admin/traffic/stream",
        "headers": [],
        "query_string": b"",
    }
    response = await traffic.stream(console, Access(console), Request(scope), Visitor("local", "-"))
    assert isinstance(response, StreamingResponse)
    events = response.body_iterator
    assert await anext(events) == "retry: 1000\n\n"
    said = str(await anext(events))
    assert said.startswith("event: problem\ndata: ") and "cannot read the audit log" in said
    await events.aclose()
    console.close()


pytestmark = pytest.mark.anyio
