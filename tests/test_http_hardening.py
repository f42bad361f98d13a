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
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit

from conftest import INITIALIZE, SERVERS, background, free_port, mcpgw_command

VERSION = "2025-11-25"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN = {**ACCEPT, "MCP-Protocol-Version": "2026-07-28"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
MAX_SESSIONS = 16
PER_CLIENT = 6
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


TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
"""The upstream behind these gateways: they call no more than `echo`, and this one is standard library
only, so it starts in milliseconds where a FastMCP upstream takes a CPU second."""


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """No `[auth]`: clients are told apart by address. Small limits, short deadlines, one persona."""
    document = {
        "gateway": {
            "max_sessions": MAX_SESSIONS,
            "max_sessions_per_client": PER_CLIENT,
            "request_body_timeout": DEADLINE,
            "request_header_timeout": DEADLINE,
        },
        "servers": {"up": TINY},
        "personas": {"ops": {}},
    }
    with serve(tmp_path_factory.mktemp("plain"), document) as gateway:
        yield gateway


@dataclass
class Guarded:
    """A gateway with `[auth]` and the issuer of its tokens."""

    gateway: Gateway
    issuer: str

    def bearer(self, subject: str) -> dict[str, str]:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.gateway.url, "iat": now, "exp": now + 300}
        minted = httpx.post(f"{self.issuer}/mint", json={"claims": claims})
        minted.raise_for_status()
        return {"Authorization": f"Bearer {minted.json()['token']}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """With `[auth]`: clients are told apart by their tokens' principals."""
    issuer_port, port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    document = {
        "gateway": {"max_sessions": 10, "max_sessions_per_client": 4},
        "servers": {"up": TINY},
        "personas": {"ops": {}},
        "auth": {"issuer": issuer, "jwks_url": f"{issuer}/jwks", "public_url": f"http://127.0.0.1:{port}"},
    }
    with (
        background([sys.executable, str(SERVERS / "issuer.py"), str(issuer_port)], port=issuer_port),
        serve(tmp_path_factory.mktemp("guarded"), document, port=port) as gateway,
    ):
        yield Guarded(gateway, issuer)


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


# --- 1. session flood --------------------------------------------------------------------------


def test_session_flood_from_one_address_leaves_another_client_its_handshake(plain: Gateway) -> None:
    opened: list[str] = []
    with client("127.0.0.1") as flooder:
        for _ in range(6):
            opened += [open_session(flooder, plain.url) for _ in range(50)]
            still_open = [s for s in opened if alive(flooder, plain.url, s)]
            assert len(still_open) <= PER_CLIENT, len(still_open)
        assert opened[-1] in still_open  # its newest sessions are the ones kept
        with client("127.0.0.2") as other:
            assert echo(other, plain.url, "still served") == "still served"
        assert echo(flooder, plain.url, "and so is the flooder, within its share") == (
            "and so is the flooder, within its share"
        )


def test_session_flood_from_many_addresses_stays_within_max_sessions(plain: Gateway) -> None:
    addresses = ["127.0.0.1", "127.0.0.3", "127.0.0.4"]
    opened: dict[str, list[str]] = {address: [] for address in addresses}
    with ExitStack() as stack:
        flooders = {address: stack.enter_context(client(address)) for address in addresses}
        for _ in range(60):
            for address, http in flooders.items():
                opened[address].append(open_session(http, plain.url))
        still_open = {
            address: [s for s in opened[address] if alive(http, plain.url, s)]
            for address, http in flooders.items()
        }
        assert all(len(kept) <= PER_CLIENT for kept in still_open.values()), still_open
        assert sum(len(kept) for kept in still_open.values()) <= MAX_SESSIONS, still_open
        with client("127.0.0.2") as other:
            assert echo(other, plain.url, "room was made") == "room was made"


def test_a_client_whose_own_sessions_are_all_busy_is_refused_and_no_one_else(plain: Gateway) -> None:
    busy_headers = {"Accept": "text/event-stream"}
    with client("127.0.0.5") as hog, ExitStack() as streams:
        for _ in range(PER_CLIENT):
            session = open_session(hog, plain.url)
            stream = streams.enter_context(
                hog.stream("GET", plain.url, headers={**on(session), **busy_headers})
            )
            assert stream.status_code == 200  # an open GET stream: the session is in use
        refused = hog.post(plain.url, json=INITIALIZE, headers=ACCEPT)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == -32603
        assert int(refused.headers["retry-after"]) > 0
        with client("127.0.0.2") as other:
            assert echo(other, plain.url, "not refused") == "not refused"
        streams.close()  # the sessions go idle: one can give way again
        deadline = time.monotonic() + 10
        while (status := hog.post(plain.url, json=INITIALIZE, headers=ACCEPT).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.1)


def test_session_flood_by_one_principal_leaves_another_principal_its_handshake(guarded: Guarded) -> None:
    """Under `[auth]` a client is its token's principal: two callers from one address are two clients."""
    alice, bob = guarded.bearer("alice"), guarded.bearer("bob")
    with client() as http:
        opened = [open_session(http, guarded.gateway.url, **alice) for _ in range(60)]
        assert sum(alive(http, guarded.gateway.url, s, **alice) for s in opened) <= 4
        assert echo(http, guarded.gateway.url, "bob is served", **bob) == "bob is served"
        # The principal's own share, not the address's: alice's newest session is still hers.
        assert alive(http, guarded.gateway.url, opened[-1], **alice)


def test_idle_sessions_end_after_session_idle_timeout(tmp_path: Path) -> None:
    document = {"gateway": {"session_idle_timeout": 1}, "servers": {"up": TINY}}
    with serve(tmp_path, document) as gateway, client() as http:
        session = open_session(http, gateway.url)
        # A probe of a live session restarts its countdown, so probes come less often than it runs.
        for _ in range(5):
            time.sleep(1.5)
            if not alive(http, gateway.url, session):
                break
        else:
            pytest.fail("the session outlived its idle timeout")


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


# --- 3. leaks ----------------------------------------------------------------------------------


def test_dns_rebinding_page_cannot_read_healthz_or_any_route(plain: Gateway) -> None:
    with client() as http:
        for path in ("/healthz", "/nowhere", "/mcp", "/personas/ops/mcp"):
            rebound = http.get(f"{plain.base}{path}", headers={"Host": "evil.example.com"})
            assert rebound.status_code == 421, (path, rebound.text)
            foreign = http.get(f"{plain.base}{path}", headers={"Origin": "http://evil.example.com"})
            assert foreign.status_code == 403, (path, foreign.text)
        health = http.get(f"{plain.base}/healthz", headers={"Origin": f"http://localhost:{plain.port}"})
        assert health.status_code in (200, 503) and "upstreams" in health.json()


def test_unknown_persona_probe_learns_no_persona_names(plain: Gateway) -> None:
    with client() as http:
        response = http.post(f"{plain.base}/personas/nope/mcp", json=INITIALIZE, headers=ACCEPT)
    assert response.status_code == 404
    assert response.json() == {"error": "unknown persona 'nope'"}


def test_persona_metadata_probe_learns_no_persona_names(guarded: Guarded) -> None:
    metadata = f"{guarded.gateway.base}/.well-known/oauth-protected-resource/personas"
    with client() as http:
        known = http.get(f"{metadata}/ops/mcp")
        assert known.status_code == 200 and known.json()["resource"].endswith("/personas/ops/mcp")
        unknown = http.get(f"{metadata}/nope/mcp")
        assert unknown.status_code == 404 and "ops" not in unknown.text
        rebound = http.get(f"{metadata}/ops/mcp", headers={"Host": "evil.example.com"})
        assert rebound.status_code == 421


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
