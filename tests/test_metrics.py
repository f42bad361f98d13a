"""Prometheus metrics, scraped over real HTTP after a known set of calls.

Gateways run as `mcpgw serve` processes where the transport is the point (HTTP's
`/metrics`, stdio's own listener, `[auth]` refusals, an upstream killed and
restarted), and in memory (`parity.served(metrics=True)`, scraped through the
same listener stdio uses) where the point is what the gateway counts: calls
queued for an upstream's slots, and sampling tokens and cost.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import tomlkit
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

import mcpgw
import parity
from conftest import (
    SERVERS,
    TLS,
    StandIn,
    background,
    free_port,
    lite_server,
    mcpgw_command,
    modules_after,
    run_mcpgw,
)
from mcpgw.config import validate
from mcpgw.server import scrape

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
POLL_LIMIT = 60.0
"""Seconds a polled condition may take: a hang guard, never reached on a loaded machine."""


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scraped(url: str) -> Samples:
    response = httpx.get(url, timeout=30, verify=TLS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def poll(url: str, ready: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        samples = scraped(url)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


@contextmanager
def http_gateway(home: Path, document: dict[str, Any], *extra: str) -> Iterator[str]:
    """`mcpgw serve -t http` for `document` on a free port; yields its base URL."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "servers.toml"
    config.write_text(tomlkit.dumps({"audit": {"path": str(home / "audit.db")}, **document}))
    port = free_port()
    command = mcpgw_command("serve", "-c", str(config), "-t", "http", "--port", str(port), *extra)
    with background(command, port=port):
        yield f"http://127.0.0.1:{port}"


def call(base: str, tool: str, arguments: dict[str, Any], *, path: str = "/mcp") -> Any:
    async def go() -> Any:
        async with Client(f"{base}{path}", mode="legacy", cache=None) as client:
            try:
                return await client.call_tool(tool, arguments)
            except MCPError as exc:
                return exc

    return anyio.run(go)


TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
"""An upstream with `echo`, standard library only: it starts in milliseconds where a FastMCP upstream
takes a CPU second. For the tests that need no more than that (the first needs `fail`'s isError, `add`)."""


# --- over HTTP ------------------------------------------------------------------------------------


@pytest.mark.long
def test_http_metrics_count_calls_by_method_persona_server_tool_and_outcome(tmp_path: Path) -> None:
    document = {
        "servers": {"up": lite_server()},
        "personas": {"ops": {"allow": ["up__echo"]}},
    }
    with http_gateway(tmp_path, document) as base:
        for _ in range(3):
            assert not call(base, "up__echo", {"message": "hi"}).is_error
        assert call(base, "up__fail", {}).is_error  # the upstream's isError: outcome error
        assert isinstance(call(base, "up__nope", {}), MCPError)  # not in the catalog
        assert isinstance(call(base, "up__nope-2", {}), MCPError)
        assert isinstance(call(base, "up__add", {"a": 1, "b": 2}, path="/personas/ops/mcp"), MCPError)

        s = scraped(f"{base}/metrics")
        requests = "mcpgw_requests_total"
        echo = {"method": "tools/call", "persona": "", "server": "up", "tool": "up__echo"}
        assert value(s, requests, **echo, outcome="ok") == 3
        assert value(s, requests, **{**echo, "tool": "up__fail"}, outcome="error") == 1
        # Unknown names share one label: a client cannot mint series.
        unknown = {"method": "tools/call", "persona": "", "server": "", "tool": "(unknown)"}
        assert value(s, requests, **unknown, outcome="error") == 2
        assert not any("up__nope" in str(key) for key in s)
        # A name the persona may not see is counted as denied, under its catalog name.
        hidden = {"method": "tools/call", "persona": "ops", "server": "", "tool": "up__add"}
        assert value(s, requests, **hidden, outcome="denied") == 1

        series = {"method": "tools/call", "server": "up", "tool": "up__echo"}
        for histogram in ("request", "upstream", "gateway"):
            assert value(s, f"mcpgw_{histogram}_duration_seconds_count", **series) == 3
        total = value(s, "mcpgw_request_duration_seconds_sum", **series)
        upstream = value(s, "mcpgw_upstream_duration_seconds_sum", **series)
        added = value(s, "mcpgw_gateway_duration_seconds_sum", **series)
        assert total is not None and upstream is not None and added is not None
        assert 0 < upstream < total and added == pytest.approx(total - upstream)

        assert value(s, "mcpgw_upstream_up", server="up") == 1
        assert value(s, "mcpgw_upstream_state", server="up", state="ready") == 1
        assert value(s, "mcpgw_upstream_state", server="up", state="failed") == 0
        assert value(s, "mcpgw_upstream_calls_in_flight", server="up") == 0
        assert value(s, "mcpgw_upstream_calls_queued", server="up") == 0
        assert value(s, "mcpgw_upstream_restarts_total", server="up") is None  # never restarted
        assert value(s, "mcpgw_audit_rows_dropped_total") == 0
        assert value(s, "mcpgw_audit_queue_depth") is not None
        assert (value(s, "process_resident_memory_bytes") or 0) > 0
        # Every client ended its session (DELETE): none is left open.
        s = poll(f"{base}/metrics", lambda s: value(s, "mcpgw_sessions_open", transport="http") == 0)
        assert value(s, "mcpgw_sessions_open", transport="http") == 0

        # A killed upstream is restarted, and counted.
        pid = call(base, "up__pid", {}).structured_content["result"]
        os.kill(pid, signal.SIGKILL)
        s = poll(
            f"{base}/metrics",
            lambda s: (
                value(s, "mcpgw_upstream_restarts_total", server="up") == 1
                and value(s, "mcpgw_upstream_up", server="up") == 1
            ),
        )
        assert value(s, "mcpgw_upstream_restarts_total", server="up") == 1
        assert value(s, "mcpgw_upstream_up", server="up") == 1

        # The Host check covers /metrics as every route: a rebound page reads nothing.
        rebound = httpx.get(f"{base}/metrics", headers={"Host": "evil.example.com"})
        assert rebound.status_code == 421


async def test_open_http_sessions_are_counted(tmp_path: Path) -> None:
    with http_gateway(tmp_path, {"servers": {"up": TINY}}) as base:
        async with (
            Client(f"{base}/mcp", mode="legacy", cache=None),
            Client(f"{base}/mcp", mode="legacy", cache=None),
            httpx.AsyncClient() as http,
        ):
            s = parse((await http.get(f"{base}/metrics")).text)
            assert value(s, "mcpgw_sessions_open", transport="http") == 2


def test_metrics_move_to_their_own_listener_or_are_turned_off(tmp_path: Path) -> None:
    port = free_port()
    document = {"servers": {"up": TINY}, "telemetry": {"metrics_port": port}}
    with http_gateway(tmp_path / "moved", document) as base:
        assert httpx.get(f"{base}/metrics").status_code == 404
        assert call(base, "up__echo", {"message": "hi"})
        s = scraped(f"http://127.0.0.1:{port}/metrics")
        echo = {"method": "tools/call", "persona": "", "server": "up", "tool": "up__echo"}
        assert value(s, "mcpgw_requests_total", **echo, outcome="ok") == 1
    off = {"servers": {"up": TINY}, "telemetry": {"metrics": False}}
    with http_gateway(tmp_path / "off", off) as base:
        assert httpx.get(f"{base}/metrics").status_code == 404
        assert httpx.get(f"{base}/healthz").status_code in (200, 503)  # ready, or still starting


def test_auth_refusals_are_counted_by_reason_and_metrics_need_no_token(tmp_path: Path) -> None:
    document = {
        "servers": {"up": TINY},
        "auth": {
            # Nothing listens there: no refusal here needs the issuer's keys.
            "issuer": "http://127.0.0.1:9/",
            "jwks_url": "http://127.0.0.1:9/jwks",
            "public_url": "http://127.0.0.1:8765",
        },
    }
    with http_gateway(tmp_path, document) as base:
        for _ in range(2):
            assert httpx.post(f"{base}/mcp", json={}).status_code == 401
        refused = httpx.post(f"{base}/mcp", json={}, headers={"Authorization": "Bearer not-a-jwt"})
        assert refused.status_code == 401
        s = scraped(f"{base}/metrics")  # no token: scrapers hold none
        assert value(s, "mcpgw_auth_refusals_total", reason="no_token") == 2
        assert value(s, "mcpgw_auth_refusals_total", reason="invalid_token") == 1


# --- stdio: a listener of its own -----------------------------------------------------------------


async def test_stdio_serves_metrics_on_its_own_listener(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(tomlkit.dumps({"servers": {"up": TINY}, "audit": {"path": str(tmp_path / "a.db")}}))
    port = free_port()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcpgw", "serve", "-c", str(config), "--metrics-port", str(port)],
        env=dict(os.environ),
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:  # type: ignore[arg-type]
            for _ in range(2):
                await client.call_tool("up__echo", {"message": "hi"})
            async with httpx.AsyncClient() as http:
                s = parse((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
    echo = {"method": "tools/call", "persona": "", "server": "up", "tool": "up__echo"}
    assert value(s, "mcpgw_requests_total", **echo, outcome="ok") == 2
    assert value(s, "mcpgw_sessions_open", transport="stdio") == 1
    assert value(s, "mcpgw_upstream_up", server="up") == 1


def test_a_taken_metrics_port_stops_serve_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(tomlkit.dumps({"servers": {"up": TINY}}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_mcpgw("serve", "-c", str(config), "--metrics-port", str(port))
    assert result.returncode == 2, result.stderr
    assert f"telemetry.metrics_port: cannot listen on 127.0.0.1:{port} for metrics" in result.stderr
    assert "Traceback" not in result.stderr

    same = run_mcpgw("serve", "-c", str(config), "-t", "http", "--port", "18999", "--metrics-port", "18999")
    assert same.returncode == 2, same.stderr
    assert "telemetry.metrics_port: 18999 is the HTTP port too" in same.stderr


def test_bad_telemetry_settings_are_refused_naming_the_key() -> None:
    from mcpgw.errors import ConfigError

    with pytest.raises(ConfigError, match=r"telemetry\.log_format"):
        validate({"telemetry": {"log_format": "xml"}}, source="t")
    with pytest.raises(ConfigError, match=r"telemetry\.metrics_port"):
        validate({"telemetry": {"metrics_port": 70000}}, source="t")
    with pytest.raises(ConfigError, match=r"telemetry\.metric"):
        validate({"telemetry": {"metric": True}}, source="t")


# --- in memory: what the gateway counts -----------------------------------------------------------


async def test_calls_in_flight_and_queued_per_upstream(audit_db: Path) -> None:
    upstream = parity.TestUpstream()
    config = parity.registry({"up": {"max_concurrent": 1}})
    async with (
        parity.served(config, {"up": upstream}, metrics=True) as gateway,
        parity.gateway_client(gateway) as client,
        anyio.create_task_group() as tg,
    ):
        assert gateway.metrics is not None
        async with scrape.listener(gateway.metrics, config, host="127.0.0.1", port=0) as url:
            for _ in range(2):
                tg.start_soon(client.call_tool, "up__sleep", {"seconds": 600})
            async with httpx.AsyncClient() as http:
                with anyio.fail_after(POLL_LIMIT):
                    while True:
                        s = parse((await http.get(url)).text)
                        if value(s, "mcpgw_upstream_calls_queued", server="up") == 1:
                            break
                        await anyio.sleep(0.02)
            assert value(s, "mcpgw_upstream_calls_in_flight", server="up") == 1
            assert value(s, "mcpgw_requests_in_flight") == 2
            tg.cancel_scope.cancel()


async def test_sampling_tokens_and_cost_by_route_and_persona(
    llm: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_sampling_paths import upstream as asking

    monkeypatch.setenv("MCPGW_TEST_LLM_KEY", "sk-test")
    route = llm.route(
        "good", key_env="MCPGW_TEST_LLM_KEY", input_cost_per_token=0.001, output_cost_per_token=0.002
    )
    config = validate(
        {
            "servers": {"ask": {"command": "unused", "era": "handshake"}},
            "personas": {"writer": {}},
            "sampling": {"policy": "llm", "routes": {"main": route}},
        },
        source="test",
    )
    async with parity.served(config, {"ask": asking()}, audit=None, metrics=True) as gateway:
        async with parity.gateway_client(gateway, persona="writer", mode="legacy") as client:
            result = await client.call_tool("ask__ask", {"text": "a haiku"})
            assert not result.is_error
        assert gateway.metrics is not None
        async with (
            scrape.listener(gateway.metrics, config, host="127.0.0.1", port=0) as url,
            httpx.AsyncClient() as http,
        ):
            s = parse((await http.get(url)).text)
    [record] = gateway.sampler.records
    assert record.input_tokens > 0 and record.output_tokens == 7  # what the stand-in reports
    labels = {"route": "main", "persona": "writer"}
    assert value(s, "mcpgw_sampling_requests_total", **labels, outcome="ok") == 1
    assert value(s, "mcpgw_sampling_tokens_total", **labels, direction="input") == record.input_tokens
    assert value(s, "mcpgw_sampling_tokens_total", **labels, direction="output") == 7
    cost = value(s, "mcpgw_sampling_cost_usd_total", **labels)
    assert cost == pytest.approx(record.input_tokens * 0.001 + 7 * 0.002)


async def test_gateways_in_one_process_keep_their_own_counts() -> None:
    async with (
        parity.served(parity.registry(), {"up": parity.TestUpstream()}, audit=None, metrics=True) as one,
        parity.served(parity.registry(), {"up": parity.TestUpstream()}, audit=None, metrics=True) as two,
        parity.gateway_client(one) as client,
    ):
        await client.call_tool("up__echo", {"message": "hi"})
        assert one.metrics is not None and two.metrics is not None
        echo = {"method": "tools/call", "persona": "", "server": "up", "tool": "up__echo", "outcome": "ok"}
        assert one.metrics.registry.get_sample_value("mcpgw_requests_total", echo) == 1
        assert two.metrics.registry.get_sample_value("mcpgw_requests_total", echo) is None
        build = {"version": mcpgw.version()}
        assert one.metrics.registry.get_sample_value("mcpgw_build_info", build) == 1


def test_prometheus_client_is_not_loaded_while_metrics_are_off() -> None:
    script = (
        "import sys\n"
        "import mcpgw.cli.serve, mcpgw.server.http, mcpgw.server.stdio\n"
        "from mcpgw.assembly import build_gateway\n"
        "from mcpgw.config import validate\n"
        "build_gateway(validate({'servers': {'up': {'command': 'x'}}}, source='t'), audit=None)\n"
    )
    assert not {m for m in modules_after(script) if m.startswith("prometheus_client")}


async def test_listings_are_counted_whether_the_cache_answers_or_not() -> None:
    config = parity.registry(personas={"ops": {"allow": ["up__echo"]}})
    async with (
        parity.served(config, {"up": parity.TestUpstream()}, audit=None, metrics=True) as gateway,
        parity.gateway_client(gateway, persona="ops") as client,
    ):
        for _ in range(3):  # the first is shaped by the handler, the others come from the cache
            assert [t.name for t in (await client.list_tools()).tools] == ["up__echo"]
        await client.list_prompts()
        assert gateway.metrics is not None
        registry = gateway.metrics.registry
        listed = {"persona": "ops", "server": "", "tool": "", "outcome": "ok"}
        assert registry.get_sample_value("mcpgw_requests_total", {"method": "tools/list", **listed}) == 3
        assert registry.get_sample_value("mcpgw_requests_total", {"method": "prompts/list", **listed}) == 1
        assert (
            registry.get_sample_value(
                "mcpgw_gateway_duration_seconds_count", {"method": "tools/list", "server": "", "tool": ""}
            )
            == 3
        )
