"""Attacks on `mcpgw serve -t http`, each run against a real gateway on 127.0.0.1, scaled down.

An adversarial review of the HTTP transport got through with a session flood
(10,000 idle `initialize` sessions locked every other handshake-era client out
with 503), slow request bodies and headers that held connections open, leaks
(`/healthz` readable through DNS rebinding, persona names in a 404) and deeply
nested JSON. Each test is named after one attack and runs it with a few hundred
sessions and deadlines of seconds against small configured limits; clients
reach the gateway on 127.0.0.1 from other loopback source addresses
(127.0.0.2, ...) where the attack needs a second client address.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit

from conftest import INITIALIZE, background, free_port, mcpgw_command, upstream_server

VERSION = "2025-11-25"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN = {**ACCEPT, "MCP-Protocol-Version": "2026-07-28"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
DEADLINE = 2
"""`request_body_timeout` and `request_header_timeout` of the gateway under attack, in seconds."""


@dataclass
class Gateway:
    base: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"


@contextmanager
def serve(
    home: Path, document: dict[str, Any], *, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """`mcpgw serve -t http` for `document` (a registry) on `port` (default: a free one)."""
    config = home / "servers.toml"
    config.write_text(tomlkit.dumps(document))
    port = port or free_port()
    command = mcpgw_command(
        "serve", "-c", str(config), "-t", "http", "--port", str(port), "--log-level", "error"
    )
    with background(command, port=port, env={"MCPGW_AUDIT_DB": str(home / "audit.db"), **(env or {})}):
        yield Gateway(f"http://127.0.0.1:{port}", port)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """No `[auth]`: clients are told apart by address. Small limits, short deadlines, one persona."""
    document = {
        "gateway": {
            "request_body_timeout": DEADLINE,
            "request_header_timeout": DEADLINE,
        },
        "servers": {"up": upstream_server()},
        "personas": {"ops": {}},
    }
    with serve(tmp_path_factory.mktemp("plain"), document) as gateway:
        yield gateway


def client(address: str = "127.0.0.1") -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.x.y.z reaches 127.0.0.1)."""
    return httpx.Client(timeout=10, transport=httpx.HTTPTransport(local_address=address))


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return [json.loads(d) for d in data if d.strip()]  # a priming event's data is empty
    return [response.json()] if response.content else []


def open_session(http: httpx.Client, url: str, **headers: str) -> str:
    response = http.post(url, json=INITIALIZE, headers={**ACCEPT, **headers})
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def on(session: str, **headers: str) -> dict[str, str]:
    return {**ACCEPT, "mcp-session-id": session, "mcp-protocol-version": VERSION, **headers}


def alive(http: httpx.Client, url: str, session: str, **headers: str) -> bool:
    """Whether `session` is still open (a closed one answers 404)."""
    ping = {"jsonrpc": "2.0", "id": "alive", "method": "ping"}
    status = http.post(url, json=ping, headers=on(session, **headers)).status_code
    assert status in (200, 404), status
    return status == 200


def echo(http: httpx.Client, url: str, message: str, **headers: str) -> str:
    """A whole handshake-era client: initialize, initialized, one tool call; the tool's answer."""
    session = open_session(http, url, **headers)
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert http.post(url, json=note, headers=on(session, **headers)).status_code == 202
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "up__echo", "arguments": {"message": message}},
    }
    response = http.post(url, json=call, headers=on(session, **headers))
    assert response.status_code == 200, response.text
    return str(messages(response)[-1]["result"]["content"][0]["text"])


# --- 2. slow clients ---------------------------------------------------------------------------


def _trickle(sockets: list[socket.socket], data: bytes, *, seconds: int) -> dict[int, bytes]:
    """Send `data` a byte a second on each socket; what each received before it was closed.

    Returns once every socket is closed by the gateway; fails after `seconds`. The bytes go half a
    second off the whole seconds of a deadline: a byte the gateway has not read when it closes makes
    its kernel reset the connection, which may drop the answer before the client reads it."""
    received: dict[int, bytes] = {i: b"" for i in range(len(sockets))}
    closed: set[int] = set()
    time.sleep(0.5)
    for step in range(seconds):
        for i, sock in enumerate(sockets):
            if i in closed:
                continue
            try:  # read first: a byte sent after the gateway closed could reset what it answered
                while chunk := sock.recv(4096):
                    received[i] += chunk
                closed.add(i)  # recv returned b"": the gateway closed the connection
                continue
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed.add(i)
                continue
            try:
                sock.sendall(data[step : step + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed.add(i)
        if len(closed) == len(sockets):
            return received
        time.sleep(1)
    raise AssertionError(f"connections still open after {seconds}s: {sorted(set(received) - closed)}")


def _connect(port: int, count: int) -> list[socket.socket]:
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


def test_slow_loris_body_gets_408_and_its_connection_closed(plain: Gateway) -> None:
    body = json.dumps(INITIALIZE).encode()
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{plain.port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sockets = _connect(plain.port, 5)
    try:
        for sock in sockets:
            sock.sendall(head)
        started = time.monotonic()
        answers = _trickle(sockets, body, seconds=DEADLINE + 8)
        assert time.monotonic() - started >= DEADLINE - 0.5
    finally:
        for sock in sockets:
            sock.close()
    for answer in answers.values():
        head_part, _, payload = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 408"), answer
        assert b"connection: close" in head_part.lower()
        error = json.loads(payload)["error"]
        assert error["code"] == -32600 and "request_body_timeout" in error["message"]
    with client() as http:
        assert echo(http, plain.url, "served on") == "served on"


def test_slow_loris_headers_are_cut_off_and_huge_ones_refused(plain: Gateway) -> None:
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{plain.port}\r\nX-Slow: {'a' * 60}\r\n\r\n".encode()
    sockets = _connect(plain.port, 5)
    try:
        started = time.monotonic()
        answers = _trickle(sockets, head, seconds=DEADLINE + 8)
        assert time.monotonic() - started >= DEADLINE - 0.5
        assert all(answer == b"" for answer in answers.values()), answers  # closed unanswered
    finally:
        for sock in sockets:
            sock.close()
    with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as sock:
        huge = b"a" * 70_000  # past the 64 KiB the gateway takes for headers; httptools would take any
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{plain.port}\r\nX-Huge: ".encode() + huge)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer


# --- 4. deep JSON ------------------------------------------------------------------------------


def test_deeply_nested_json_gets_a_parse_error_and_the_gateway_serves_on(plain: Gateway) -> None:
    deep = b"[" * 100_000
    with client() as http:
        session = open_session(http, plain.url)
        for headers in (ACCEPT, on(session), MODERN):
            response = http.post(plain.url, content=deep, headers=headers)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] in (-32700, -32600)
        # Deep inside a well-formed 2026-07-28 call, past what the handshake era's parser takes.
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {
                "name": "up__echo",
                "arguments": {"message": "x", "extra": "DEEP"},
                "_meta": MODERN_META,
            },
        }
        body = json.dumps(call).replace('"DEEP"', "[" * 500 + "]" * 500)
        response = http.post(
            plain.url, content=body, headers={**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "up__echo"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == -32700
        assert echo(http, plain.url, "served on") == "served on"
