"""OpenTelemetry traces: spans exported over OTLP/HTTP to a receiver the test runs, and context
carried from a client through the gateway to its upstreams.

The gateway runs as `mcpgw serve` (tracing is process-wide, as the OpenTelemetry SDK has it);
its spans go to `otlp.Receiver` on 127.0.0.1, which decodes them with opentelemetry-proto. The
upstream (`servers/traced.py`) answers with the `traceparent` it saw, in its HTTP header and in
its `_meta`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import tomlkit
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import (
    PROCESS_LIMIT,
    SERVERS,
    StandIn,
    background,
    free_port,
    gateway_stdio,
    mcpgw_command,
    run_mcpgw,
)
from otlp import Receiver, Span, receiving

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_PARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
META_TRACE = "0af7651916cd43dd8448eb211c80319c"
META_SPAN = "b7ad6b7169203331"
META_PARENT = f"00-{META_TRACE}-{META_SPAN}-01"

pytestmark = pytest.mark.anyio


def parse(traceparent: str) -> tuple[str, str]:
    """(trace id, parent span id) of a W3C `traceparent`."""
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


@contextmanager
def traced_upstream(*, sse: bool = False) -> Iterator[str]:
    port = free_port()
    args = ["sse", str(port)] if sse else [str(port)]
    with background([sys.executable, str(SERVERS / "traced.py"), *args], port=port):
        yield f"http://127.0.0.1:{port}/sse" if sse else f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    """One streamable-HTTP `traced.py` for the module: it only reports what reached it, per call, so
    each test's gateway (its own client session) reads it without seeing another test's calls."""
    with traced_upstream() as url:
        yield url


def registry(path: Path, receiver: Receiver, servers: dict[str, Any], **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "telemetry": {"traces": True, "traces_endpoint": receiver.base, "service_name": "gw-under-test"},
        "servers": servers,
        **extra,
    }
    path.write_text(tomlkit.dumps(doc))
    return path


@asynccontextmanager
async def serving(
    config: Path, *, env: dict[str, str] | None = None, log: list[str] | None = None
) -> AsyncIterator[str]:
    """`mcpgw serve --transport http` with spans sent every 50 ms; yields its /mcp URL.

    `log`: filled with the gateway's JSON log lines (debug) once it has stopped.
    """
    port = free_port()
    extra = ("--log-format", "json", "--log-level", "debug") if log is not None else ()
    command = mcpgw_command(
        "serve", "--config", str(config), "--transport", "http", "--port", str(port), *extra
    )
    with background(command, port=port, env={"OTEL_BSP_SCHEDULE_DELAY": "50", **(env or {})}) as process:
        yield f"http://127.0.0.1:{port}/mcp"
        if log is not None:
            assert process.stderr is not None
            os.killpg(process.pid, signal.SIGTERM)
            log.extend(process.stderr.read().decode().splitlines())


@asynccontextmanager
async def client(
    url: str, *, traceparent: str | None = None, mode: str = "legacy", **kwargs: Any
) -> AsyncIterator[Client]:
    headers = {"traceparent": traceparent} if traceparent is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, cache=None, **kwargs) as c,  # type: ignore[arg-type]
    ):
        yield c


def arrived(*names: str, span_id: str | None = None) -> Callable[[list[Span]], bool]:
    """Whether spans of all these names (and the span `span_id`) have arrived: a parent ends, and
    so is sent, after its children, possibly in a later batch."""

    def check(spans: list[Span]) -> bool:
        ids = {s.span_id for s in spans}
        return set(names) <= {s.name for s in spans} and (span_id is None or span_id in ids)

    return check


def one(spans: list[Span], name: str, **where: Any) -> Span:
    found = [s for s in spans if s.name == name and all(getattr(s, k) == v for k, v in where.items())]
    assert len(found) == 1, (name, where, [(s.name, s.trace_id, s.parent_id) for s in spans])
    return found[0]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_traceparent_is_continued_to_an_http_upstream_and_the_tree_exported(
    tmp_path: Path, mode: str, upstream_url: str
) -> None:
    rules = {"rules": [{"detectors": ["email"], "directions": ["arguments", "results"], "action": "redact"}]}
    with receiving() as receiver:
        config = registry(tmp_path / "servers.toml", receiver, {"up": {"url": upstream_url}}, security=rules)
        async with serving(config) as url, client(url, traceparent=CLIENT_PARENT, mode=mode) as c:
            result = await c.call_tool("up__seen", {})
        assert not result.is_error
        seen = result.structured_content
        assert seen is not None and seen["header"] is not None
        # The upstream's HTTP header and `_meta` name the same span, in the client's trace.
        assert seen["meta"] == seen["header"]
        header_trace, header_parent = parse(seen["header"])
        assert header_trace == CLIENT_TRACE

        spans = receiver.wait_for(arrived("tools/call up__seen", span_id=header_parent))
    request = one(spans, "tools/call up__seen")
    assert (request.kind, request.trace_id, request.parent_id) == ("server", CLIENT_TRACE, CLIENT_SPAN)
    attributes = request.attributes
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "up__seen"
    assert attributes["network.transport"] == "tcp"
    assert attributes["mcp.protocol.version"]
    if mode == "legacy":
        assert len(attributes["mcp.session.id"]) >= 16  # the client's handshake-era session
    else:
        assert attributes["mcp.protocol.version"] == "2026-07-28"  # stateless: no session
    assert attributes["mcpgw.server"] == "up" and attributes["mcpgw.outcome"] == "ok"
    assert request.resource["service.name"] == "gw-under-test"
    assert request.status == "unset"

    upstream_call = one(spans, "tools/call seen", parent_id=request.span_id)
    assert upstream_call.kind == "client"
    assert upstream_call.attributes["gen_ai.tool.name"] == "seen"
    assert upstream_call.attributes["mcpgw.server"] == "up"
    assert upstream_call.attributes["server.address"] == "127.0.0.1"
    assert upstream_call.attributes["server.port"] == int(upstream_url.split(":")[2].split("/")[0])
    # The span the upstream saw as its parent is the mcp SDK's send, under the upstream call.
    sent = next(s for s in spans if s.span_id == header_parent)
    assert sent.parent_id == upstream_call.span_id and sent.trace_id == CLIENT_TRACE

    # The gateway's own traffic with its upstreams (handshakes, pings, listings) is no trace.
    assert all(s.parent_id is not None for s in spans if s.name.startswith("MCP send"))

    rules_spans = [s for s in spans if s.name.startswith("data rules") and s.parent_id == request.span_id]
    assert sorted(s.attributes["mcpgw.data_rules.stage"] for s in rules_spans) == ["arguments", "results"]
    assert all(s.attributes["mcpgw.data_rules.target"] == "up__seen" for s in rules_spans)


async def test_meta_traceparent_wins_over_the_http_header_and_reaches_every_upstream(
    tmp_path: Path, upstream_url: str
) -> None:
    stdio = {"command": sys.executable, "args": [str(SERVERS / "traced.py"), "stdio"]}
    with receiving() as receiver, traced_upstream(sse=True) as sse_url:
        servers = {"web": {"url": upstream_url}, "old": {"url": sse_url, "transport": "sse"}, "local": stdio}
        config = registry(tmp_path / "servers.toml", receiver, servers)
        async with serving(config) as url, client(url, traceparent=CLIENT_PARENT) as c:
            web = await c.call_tool("web__seen", {}, meta={"traceparent": META_PARENT})
            old = await c.call_tool("old__seen", {}, meta={"traceparent": META_PARENT})
            local = await c.call_tool("local__seen", {}, meta={"traceparent": META_PARENT})
        assert web.structured_content is not None and local.structured_content is not None
        for seen in (web.structured_content, old.structured_content):
            assert seen is not None and seen["header"] == seen["meta"]
            assert parse(seen["header"])[0] == META_TRACE
        assert local.structured_content["header"] is None  # stdio: `_meta` only
        local_trace, local_parent = parse(local.structured_content["meta"])
        assert local_trace == META_TRACE
        spans = receiver.wait_for(
            arrived(
                "tools/call web__seen", "tools/call old__seen", "tools/call local__seen", span_id=local_parent
            )
        )
    for name in ("tools/call web__seen", "tools/call old__seen", "tools/call local__seen"):
        request = one(spans, name)
        assert (request.trace_id, request.parent_id) == (META_TRACE, META_SPAN)
    assert one(
        spans, "tools/call seen", trace_id=META_TRACE, parent_id=one(spans, "tools/call local__seen").span_id
    )


@pytest.mark.long
async def test_sampling_and_its_model_call_are_spans_of_the_call_that_asked(
    tmp_path: Path, llm: StandIn, monkeypatch: pytest.MonkeyPatch, audit_db: Path, upstream_url: str
) -> None:
    monkeypatch.setenv("MCPGW_TEST_LLM_KEY", "sk-test")
    route = llm.route("good", key_env="MCPGW_TEST_LLM_KEY")
    sampling = {"policy": "llm", "routes": {"main": route}}
    log: list[str] = []
    with receiving() as receiver:
        servers = {"up": {"url": upstream_url, "era": "handshake"}}
        config = registry(tmp_path / "servers.toml", receiver, servers, sampling=sampling)
        async with serving(config, log=log) as url:
            async with client(url) as c:
                result = await c.call_tool("up__ask", {"prompt": "a haiku"})
            assert not result.is_error, result.content
            spans = receiver.wait_for(arrived("tools/call up__ask", "chat openai/good"))
    request = one(spans, "tools/call up__ask")
    assert request.parent_id is None  # no traceparent from the client: a trace of its own
    upstream_call = one(spans, "tools/call ask", parent_id=request.span_id)
    sampled = one(spans, "sampling/createMessage", parent_id=upstream_call.span_id)
    assert sampled.kind == "server"
    assert sampled.attributes["mcpgw.server"] == "up"
    assert sampled.attributes["mcpgw.sampling.outcome"] == "ok"
    assert sampled.attributes["mcpgw.sampling.answered_by"] == "main"
    assert sampled.attributes["gen_ai.request.max_tokens"] == 50
    chat = one(spans, "chat openai/good", parent_id=sampled.span_id)
    assert chat.kind == "client"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.request.model"] == "openai/good"
    assert chat.attributes["gen_ai.usage.output_tokens"] == 7  # what the stand-in reports
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert {s.trace_id for s in (upstream_call, sampled, chat)} == {request.trace_id}
    # The request's JSON log lines carry its trace id.
    lines = [json.loads(line) for line in log if line.startswith("{")]
    served = [line for line in lines if line["message"].startswith("tools/call up__ask")]
    assert [line["trace_id"] for line in served] == [request.trace_id]
    # ... and the span names the audit rows of the call and of its sampling request.
    with sqlite3.connect(audit_db) as db:
        rows = db.execute("select kind, request_id from events where kind in ('call', 'sampling')").fetchall()
    request_id = request.attributes["mcpgw.request_id"]
    assert sorted(rows) == [("call", request_id), ("sampling", request_id)]


async def test_a_failed_call_is_an_error_span_with_the_code_the_client_saw(
    tmp_path: Path, upstream_url: str
) -> None:
    block = {"detectors": ["email"], "directions": ["arguments"], "tools": ["up__seen"], "action": "block"}
    with receiving() as receiver:
        servers = {"up": {"url": upstream_url}}
        config = registry(tmp_path / "servers.toml", receiver, servers, security={"rules": [block]})
        async with serving(config) as url, client(url) as c:
            with pytest.raises(MCPError) as missing:
                await c.call_tool("up__nothing", {})
            wrong = await c.call_tool("up__ask", {})  # `prompt` is required: the upstream refuses
            with pytest.raises(MCPError) as blocked:
                await c.call_tool("up__seen", {"note": "mail me at someone@example.com"})
        assert wrong.is_error
        spans = receiver.wait_for(
            arrived("tools/call (unknown)", "tools/call up__ask", "tools/call up__seen")
        )
    refusal = one(spans, "tools/call up__seen")
    assert refusal.attributes["error.type"] == str(blocked.value.error.code)
    assert refusal.attributes["mcpgw.outcome"] == "blocked"
    rule = one(spans, "data rules arguments", parent_id=refusal.span_id)
    assert (rule.status, rule.attributes["error.type"]) == ("error", "DataBlocked")
    assert not [s for s in spans if s.name == "tools/call seen"]  # nothing went upstream
    unknown = one(spans, "tools/call (unknown)")  # a client cannot mint span names
    assert unknown.attributes["gen_ai.tool.name"] == "up__nothing"
    assert unknown.status == "error"
    code = str(missing.value.error.code)
    assert unknown.attributes["error.type"] == unknown.attributes["rpc.response.status_code"] == code
    assert unknown.attributes["mcpgw.outcome"] == "error"
    assert "mcpgw.server" not in unknown.attributes  # never routed: no upstream call either
    assert not [s for s in spans if s.parent_id == unknown.span_id]
    refused = one(spans, "tools/call up__ask")
    assert (refused.status, refused.attributes["error.type"]) == ("error", "tool_error")
    assert one(spans, "tools/call ask", parent_id=refused.span_id).attributes["error.type"] == "tool_error"


def _imports(config: Path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], str]:
    """`mcpgw serve` over stdio, stopped by its closed stdin, with every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *mcpgw_command("serve", "--config", str(config))[1:]],
        capture_output=True,
        text=True,
        timeout=PROCESS_LIMIT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    return done, done.stderr


def test_off_by_default_the_sdk_is_never_imported(tmp_path: Path) -> None:
    servers = {"local": {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}}
    plain = tmp_path / "plain.toml"
    plain.write_text(tomlkit.dumps({"servers": servers}))
    done, imported = _imports(plain)
    assert done.returncode == 0, done.stderr[-2000:]
    assert " mcpgw.server.stdio\n" in imported  # it did start serving
    assert "opentelemetry.sdk" not in imported and "opentelemetry.exporter" not in imported
    # What turns it on imports them (so the check above can fail).
    on = tmp_path / "on.toml"
    on.write_text(tomlkit.dumps({"servers": servers, "telemetry": {"traces": True}}))
    done, imported = _imports(on, env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert " opentelemetry.sdk.trace\n" in imported and "tracing: spans go to http://127.0.0.1:" in imported
    done, imported = _imports(plain, env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "50"})
    assert " opentelemetry.sdk.trace\n" in imported  # the standard variable turns it on too


async def test_off_a_clients_trace_context_passes_through_untouched(tmp_path: Path) -> None:
    stdio = {"command": sys.executable, "args": [str(SERVERS / "traced.py"), "stdio"]}
    config = tmp_path / "servers.toml"
    config.write_text(tomlkit.dumps({"servers": {"local": stdio}}))
    async with gateway_stdio(config) as c:
        result = await c.call_tool("local__seen", {}, meta={"traceparent": META_PARENT})
    assert result.structured_content == {"header": None, "meta": META_PARENT}


@pytest.mark.parametrize(
    ("telemetry", "env", "message"),
    [
        ({"traces": True}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        ({}, {"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin"),
        ({"traces": True, "traces_endpoint": "collector:4318"}, {}, "traces_endpoint"),
    ],
)
def test_a_tracing_setting_it_cannot_honour_stops_serve_with_the_reason(
    tmp_path: Path, telemetry: dict[str, Any], env: dict[str, str], message: str
) -> None:
    config = tmp_path / "servers.toml"
    servers = {"local": {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}}
    config.write_text(tomlkit.dumps({"servers": servers, "telemetry": telemetry}))
    done = run_mcpgw("serve", "--config", str(config), env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


async def test_over_stdio_meta_is_the_only_carrier_and_stdout_stays_the_mcp_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow upstream: the first call arrives before the catalog has its tool, and its span is
    # named once the call is routed.
    stdio = {
        "command": sys.executable,
        "args": [str(SERVERS / "traced.py"), "stdio"],
        "env": {"TRACED_START_DELAY": "2"},
    }
    with receiving() as receiver:
        config = registry(tmp_path / "servers.toml", receiver, {"local": stdio})
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        # Any stray byte on stdout would break the client's JSON-RPC stream: the calls prove none.
        async with gateway_stdio(config) as c:
            traced = await c.call_tool("local__seen", {}, meta={"traceparent": META_PARENT})
            fresh = await c.call_tool("local__seen", {})
            spans = receiver.wait_for(
                lambda spans: sum(s.name == "tools/call local__seen" for s in spans) == 2
            )
    assert traced.structured_content is not None and fresh.structured_content is not None
    assert parse(traced.structured_content["meta"])[0] == META_TRACE
    new_trace = parse(fresh.structured_content["meta"])[0]
    assert new_trace not in (META_TRACE, "0" * 32)  # no traceparent from the client: a trace of its own
    requests = {s.trace_id: s for s in spans if s.name == "tools/call local__seen"}
    assert set(requests) == {META_TRACE, new_trace}
    assert requests[META_TRACE].parent_id == META_SPAN and requests[new_trace].parent_id is None
    assert {s.attributes["network.transport"] for s in requests.values()} == {"pipe"}
    assert all("mcp.session.id" not in s.attributes for s in requests.values())
