"""The lean HTTP path for 2026-07-28 calls (`server.stateless`) answers as the SDK's stateless entry does.

The gateway's whole HTTP app (`http.http_app`: Host check, body limits, rate limits, personas, the
session manager) runs in memory, driven through ASGI; each request is sent once down the lean path
and once with it turned off (the SDK's `handle_modern_request`), and the two answers must agree:
status, content type and the JSON-RPC message. Bad requests (each refused by one check of the
SDK's) go to the SDK and get its refusal; a request that asks for progress still gets an SSE
stream; a client that goes away cancels its call; audit rows and metrics are the same.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.server import streamable_http_manager

from mcpgw.audit import AuditLog
from mcpgw.core.gateway import Gateway
from mcpgw.server import stateless
from mcpgw.server.http import http_app
from parity import TestUpstream, asgi_lifespan, registry, served
from test_gateway import wait_until as until

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
HANG_GUARD = 30
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}
PERSONAS = {"default": {"allow": ["up__echo", "up__fail"]}, "wide": {"servers": ["up"]}}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def messages(self) -> list[Any]:
        """The JSON-RPC messages: the JSON body, or each SSE event's data; a plain-text body as it is."""
        kind = self.headers.get("content-type", "")
        if kind.startswith("text/event-stream"):
            events = self.body.decode().split("\r\n\r\n")
            return [json.loads(e.split("data: ", 1)[1]) for e in events if "data: " in e]
        if kind.startswith("application/json"):
            return [json.loads(self.body)]
        return [self.body.decode()] if self.body else []

    def seen(self) -> tuple[int, str, list[Any]]:
        """What a client reads of the answer (the server stamps its own name and version in `_meta`)."""
        return self.status, self.headers.get("content-type", ""), self.messages


@contextmanager
def sdk_only() -> Iterator[None]:
    """The lean path off: every request goes to the SDK's session manager, as before it existed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stateless, "METHODS", frozenset())
        yield


async def post(
    app: Any,
    body: bytes | dict[str, Any],
    *,
    path: str = "/mcp",
    headers: dict[str, str] | None = None,
    gone: anyio.Event | None = None,
    on_body: Callable[[], object] | None = None,
    repeated: tuple[tuple[str, str], ...] = (),
) -> Answer:
    """One POST through the whole app; `gone`, once set, is the client closing the connection;
    `on_body` is called as the answer's body is handed to the server to write; `repeated`: header
    lines sent after the others (a name sent twice)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    fields = {"host": "127.0.0.1:8000", "content-type": "application/json", **(headers or {})}
    fields.setdefault("accept", "application/json, text/event-stream")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in fields.items()]
        + [(b"content-length", str(len(raw)).encode())]
        + [(k.encode(), v.encode()) for k, v in repeated],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    read = False
    closed = gone or anyio.Event()
    status, out, chunks = 0, {}, []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await closed.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out.update({k.decode(): v.decode() for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if on_body is not None:
                on_body()

    with anyio.fail_after(HANG_GUARD):
        await app(scope, receive, send)
    return Answer(status, out, b"".join(chunks))


def call(
    method: str, params: dict[str, Any], *, request_id: Any = 1, meta: dict[str, Any] | None = None
) -> Any:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {**params, "_meta": {**ENVELOPE, **(meta or {})}},
    }


def routing(method: str, name: str | None = None, **more: str) -> dict[str, str]:
    headers = {"mcp-protocol-version": MODERN, "mcp-method": method, **more}
    if name is not None:
        headers["mcp-name"] = name
    return headers


@asynccontextmanager
async def gateway_app(
    *, audit: AuditLog | None = None, **sections: Any
) -> AsyncIterator[tuple[Gateway, Any]]:
    config = registry({"up": {}}, personas=PERSONAS, **sections)
    async with (
        served(config, {"up": TestUpstream()}, audit=audit, metrics=True) as gateway,
        asgi_lifespan(http_app(gateway, host="127.0.0.1")) as app,
    ):
        yield gateway, app


ECHO = call("tools/call", {"name": "up__echo", "arguments": {"message": "hé"}})
GOOD: list[tuple[str, Any, dict[str, str], str]] = [
    ("call", ECHO, routing("tools/call", "up__echo"), "/mcp"),
    ("call, named persona", ECHO, routing("tools/call", "up__echo"), "/personas/wide/mcp"),
    ("string id", {**ECHO, "id": "a"}, routing("tools/call", "up__echo"), "/mcp"),
    ("extra envelope member", {**ECHO, "extra": 1}, routing("tools/call", "up__echo"), "/mcp"),
    (
        "tool error",
        call("tools/call", {"name": "up__fail", "arguments": {}}),
        routing("tools/call", "up__fail"),
        "/mcp",
    ),
    (
        "tool outside the persona",
        call("tools/call", {"name": "up__add", "arguments": {"a": 1, "b": 2}}),
        routing("tools/call", "up__add"),
        "/mcp",
    ),
    (
        "invalid arguments",
        call("tools/call", {"name": "up__add", "arguments": {"a": "x"}}),
        routing("tools/call", "up__add"),
        "/personas/wide/mcp",
    ),
    (
        "read",
        call("resources/read", {"uri": "mcpgw://up/test://static"}),
        routing("resources/read", "mcpgw://up/test://static"),
        "/personas/wide/mcp",
    ),
    (
        "prompt",
        call("prompts/get", {"name": "up__greet", "arguments": {"name": "Ada"}}),
        routing("prompts/get", "up__greet"),
        "/personas/wide/mcp",
    ),
    (
        "completion",
        call(
            "completion/complete",
            {"ref": {"type": "ref/prompt", "name": "up__greet"}, "argument": {"name": "name", "value": "A"}},
        ),
        routing("completion/complete"),
        "/personas/wide/mcp",
    ),
]
BAD: list[tuple[str, Any, dict[str, str]]] = [
    ("Mcp-Name differs from the body", ECHO, routing("tools/call", "up__fail")),
    ("Mcp-Method differs from the body", ECHO, routing("resources/read", "up__echo")),
    (
        "version header differs from the body",
        ECHO,
        routing("tools/call", "up__echo") | {"mcp-protocol-version": "2099-01-01"},
    ),
    (
        "no envelope",
        {**ECHO, "params": {"name": "up__echo", "arguments": {}}},
        routing("tools/call", "up__echo"),
    ),
    ("boolean id", {**ECHO, "id": True}, routing("tools/call", "up__echo")),
    ("params not an object", {**ECHO, "params": [1]}, routing("tools/call")),
    ("a batch", [ECHO], routing("tools/call", "up__echo")),
    ("not JSON", b"{nope", routing("tools/call", "up__echo")),
    (
        "no id: a notification",
        {k: v for k, v in ECHO.items() if k != "id"},
        routing("tools/call", "up__echo"),
    ),
    ("wrong jsonrpc", {**ECHO, "jsonrpc": "1.0"}, routing("tools/call", "up__echo")),
    ("wrong content type", ECHO, routing("tools/call", "up__echo") | {"content-type": "text/plain"}),
    ("accepts no SSE", ECHO, routing("tools/call", "up__echo") | {"accept": "application/json"}),
    ("accepts no JSON", ECHO, routing("tools/call", "up__echo") | {"accept": "text/event-stream"}),
    ("unknown method", call("tools/nope", {}), routing("tools/nope")),
]


async def both(app: Any, body: Any, headers: dict[str, str], path: str = "/mcp") -> tuple[Answer, Answer]:
    lean = await post(app, body, path=path, headers=headers)
    with sdk_only():
        sdk = await post(app, body, path=path, headers=headers)
    return lean, sdk


async def test_good_and_bad_requests_get_the_sdks_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    entered: list[str] = []
    sdk_entry = streamable_http_manager.handle_modern_request

    async def counted(*args: Any) -> None:
        entered.append("sdk")
        await sdk_entry(*args)

    monkeypatch.setattr(streamable_http_manager, "handle_modern_request", counted)
    async with gateway_app() as (_, app):
        for label, body, headers, path in GOOD:
            lean, sdk = await both(app, body, headers, path)
            assert lean.seen() == sdk.seen(), label
            assert lean.headers["content-length"] == str(len(lean.body)), label
            assert entered == ["sdk"], f"{label}: served by the SDK's entry"
            entered.clear()
        for label, body, headers in BAD:
            lean, sdk = await both(app, body, headers)
            assert lean.seen() == sdk.seen(), label
            assert entered == ["sdk", "sdk"], f"{label}: left to the SDK's entry"
            entered.clear()
            assert lean.status != 200 or "error" in lean.messages[0], (
                label
            )  # a refusal, or 202 for a notification
        # A rebound page's Host and Origin are refused in front of every route, before either path.
        for rebound in ({"host": "evil.example.com"}, {"origin": "http://evil.example.com"}):
            lean, sdk = await both(app, ECHO, routing("tools/call", "up__echo") | rebound)
            assert lean.seen() == sdk.seen() and lean.status in (421, 403) and not entered
        # A path persona that does not exist is the HTTP layer's 404, naming none of the others.
        lean, sdk = await both(app, ECHO, routing("tools/call", "up__echo"), "/personas/nobody/mcp")
        assert lean.seen() == sdk.seen() and lean.status == 404


async def test_a_call_answered_on_the_lean_path_is_the_upstreams_result() -> None:
    async with gateway_app() as (_, app):
        answer = await post(app, ECHO, headers=routing("tools/call", "up__echo"))
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    (message,) = answer.messages
    assert message["id"] == 1 and message["result"]["content"] == [{"type": "text", "text": "hé"}]
    assert b"h\\u00e9" in answer.body  # ASCII JSON, as the SDK writes it


async def test_a_call_that_asks_for_progress_still_gets_an_sse_stream() -> None:
    slow = call(
        "tools/call", {"name": "up__slow", "arguments": {"steps": 2, "delay": 0}}, meta={"progressToken": "p"}
    )
    async with gateway_app() as (_, app):
        lean, sdk = await both(app, slow, routing("tools/call", "up__slow"), "/personas/wide/mcp")
    assert lean.headers["content-type"] == sdk.headers["content-type"] == "text/event-stream"
    methods = [m.get("method") for m in lean.messages]
    assert methods == ["notifications/progress", "notifications/progress", None]
    assert lean.seen() == sdk.seen()


async def test_a_client_that_goes_away_cancels_its_call() -> None:
    sleep = call("tools/call", {"name": "up__sleep", "arguments": {"seconds": 60}})
    async with gateway_app() as (gateway, app):
        up = gateway.upstreams["up"]
        gone = anyio.Event()
        async with anyio.create_task_group() as tg:
            answers: list[Answer] = []

            async def client() -> None:
                answers.append(
                    await post(
                        app,
                        sleep,
                        path="/personas/wide/mcp",
                        headers=routing("tools/call", "up__sleep"),
                        gone=gone,
                    )
                )

            tg.start_soon(client)
            with anyio.fail_after(HANG_GUARD):
                while not up.in_flight:
                    await anyio.sleep(0.01)
                gone.set()
                while up.in_flight:
                    await anyio.sleep(0.01)
        assert answers == [Answer(0, {}, b"")]  # nothing was written to a client that left


async def test_audit_rows_and_metrics_are_the_same_on_both_paths(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db").start()
    try:
        async with gateway_app(audit=log) as (gateway, app):
            lean, sdk = await both(app, ECHO, routing("tools/call", "up__echo"))
            assert lean.seen() == sdk.seen()
            assert gateway.metrics is not None
            counted = gateway.metrics.registry.get_sample_value(
                "mcpgw_requests_total",
                {
                    "method": "tools/call",
                    "persona": "default",
                    "server": "up",
                    "tool": "up__echo",
                    "outcome": "ok",
                },
            )
    finally:
        log.close()
    assert counted == 2
    keep = "kind, method, name, persona, server, outcome, client, protocol, arguments, result, error"
    with sqlite3.connect(tmp_path / "audit.db") as db:
        rows = db.execute(f"select {keep} from events where kind = 'call' order by id").fetchall()
    assert len(rows) == 2 and rows[0] == rows[1]
    assert rows[0][:6] == ("call", "tools/call", "up__echo", "default", "up", "ok")
    assert rows[0][7] == MODERN


async def test_a_repeated_routing_header_is_refused_after_the_same_lines_without_it_were_served() -> None:
    """The header lines read once per distinct set (`_header_fields`) still tell a repeated `Mcp-Method`."""
    headers = routing("tools/call", "up__echo")
    async with gateway_app() as (_, app):
        assert (await post(app, ECHO, headers=headers)).status == 200
        twice = (("mcp-method", "tools/call"),)
        lean = await post(app, ECHO, headers=headers, repeated=twice)
        with sdk_only():
            sdk = await post(app, ECHO, headers=headers, repeated=twice)
    assert lean.seen() == sdk.seen() and lean.status == 400


async def test_a_call_is_booked_once_its_answer_is_written() -> None:
    """Its metrics and audit row (`afteranswer`, as on the stdio lane) wait for the answer's write,
    and are booked right after it: the client does not wait for them."""
    labels = {
        "method": "tools/call",
        "persona": "default",
        "server": "up",
        "tool": "up__echo",
        "outcome": "ok",
    }
    async with gateway_app() as (gateway, app):
        metrics = gateway.metrics
        assert metrics is not None

        def counted() -> float:
            return metrics.registry.get_sample_value("mcpgw_requests_total", labels) or 0.0

        at_answer: list[float] = []
        answer = await post(
            app, ECHO, headers=routing("tools/call", "up__echo"), on_body=lambda: at_answer.append(counted())
        )
        assert answer.status == 200 and at_answer == [0.0]
        await until(lambda: counted() == 1.0, timeout=HANG_GUARD)


async def test_a_call_that_outlasts_the_ping_interval_becomes_a_stream_as_on_the_sdks_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK commits to SSE and pings when a call runs silent past its interval; so does the lean path."""
    from mcp.server import _streamable_http_modern

    monkeypatch.setattr(_streamable_http_modern, "_SSE_PING_INTERVAL", 0.05)
    monkeypatch.setattr(stateless, "PING_INTERVAL", 0.05)
    sleep = call("tools/call", {"name": "up__sleep", "arguments": {"seconds": 0.3}})
    async with gateway_app() as (_, app):
        lean, sdk = await both(app, sleep, routing("tools/call", "up__sleep"), "/personas/wide/mcp")
    assert lean.seen() == sdk.seen()
    assert lean.headers["content-type"] == "text/event-stream" and lean.body.startswith(b": ping\r\n\r\n")
    assert lean.messages[0]["result"]["content"][0]["text"]


async def test_with_auth_a_call_without_a_good_token_is_refused_before_either_path() -> None:
    """`[auth]` stays in front: no token, or one that is not a JWT, gets the same 401 on both paths
    (decided before any key is fetched, so the issuer need not exist)."""
    auth = {
        "issuer": "https://issuer.invalid",
        "jwks_url": "https://issuer.invalid/jwks",
        "public_url": "http://127.0.0.1:8000",
        "persona_claim": "p",
    }
    async with gateway_app(auth=auth) as (_, app):
        for path in ("/mcp", "/personas/wide/mcp"):
            for token in ({}, {"authorization": "Bearer not-a-jwt"}):
                lean, sdk = await both(app, ECHO, routing("tools/call", "up__echo") | token, path)
                assert lean.status == sdk.status == 401, (path, token)
                assert lean.headers["www-authenticate"] == sdk.headers["www-authenticate"]
                assert lean.body == sdk.body


@pytest.mark.parametrize(
    "result",
    [
        {"content": [{"type": "text", "text": "plain ASCII, 42 of them"}], "isError": False},
        {"text": "hé \u2028 😀"},
        {"text": 'a\x7fb\x00\x1f\n\t"\\/'},
        {"n": [1e-05, 0.1, 1e16, 1e22, 5e-324, -0.0, 123456789.123, 2.0]},
        {"n": [float("nan"), float("inf"), float("-inf")], "none": None},
        {"big": 2**64 + 1, "small": -(2**63), "bools": [True, False]},
        {"version": "v1.2e3 and 3. and 4e"},
        {"a": [1.5], "b": [-2.5e-7, [3.25]], "c": {"d": 1e300}, "e": -1e-05},
    ],
)
def test_an_answer_is_written_byte_for_byte_as_the_sdk_writes_it(result: dict[str, Any]) -> None:
    """Compact, ASCII-only JSON as `json` writes it, whichever encoder wrote it."""
    message = {"jsonrpc": "2.0", "id": 7, "result": result}
    assert stateless._dumps(message) == json.dumps(message, separators=(",", ":")).encode()


def test_floats_of_every_size_are_written_as_the_sdk_writes_them() -> None:
    """Random floats across the whole range, exponents and the 1e-05..1e-04 band included, in arrays
    and as values: each answer is byte for byte what `json` writes (seeded: the same every run)."""
    rng = random.Random(2026)
    for _ in range(20_000):
        bits = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        scaled = rng.random() * 10 ** rng.randint(-30, 30)
        decimal = rng.randint(-(10**6), 10**6) / 10 ** rng.randint(0, 12)
        values = [v for v in (bits, scaled, decimal) if math.isfinite(v)]
        message = {"jsonrpc": "2.0", "id": 1, "result": {"n": values, "x": {"v": values[-1]}}}
        assert stateless._dumps(message) == json.dumps(message, separators=(",", ":")).encode()
