"""Malformed JSON-RPC into `mcpgw serve` over stdio: no crash, no hang, every reply well-formed.

After each fuzzed line a `ping` with a known id must come back, so a gateway
that hung or died fails the test at once. Bounded: a fixed number of cases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SERVERS, lite_server
from test_lifecycle import RawGateway

METHODS = [
    "tools/call",
    "tools/list",
    "resources/read",
    "prompts/get",
    "completion/complete",
    "resources/templates/list",
    "server/discover",
    "initialize",
    "ping",
    "nope/nope",
    "",
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
MESSAGES = st.one_of(
    st.fixed_dictionaries(
        {
            "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
            "method": st.sampled_from(METHODS) | st.text(max_size=12),
        },
        optional={
            "id": st.integers() | st.text(max_size=6) | st.none() | st.floats(allow_nan=False),
            "params": JSON
            | st.fixed_dictionaries(
                {"name": st.text(max_size=10) | st.sampled_from(["up__echo", "up__add"]), "arguments": JSON}
            ),
        },
    ).map(json.dumps),
    JSON.map(json.dumps),
    st.text(max_size=60).filter(lambda t: "\n" not in t and "\r" not in t),
)


def expects_reply(line: str) -> bool:
    """JSON-RPC 2.0: every request and every malformed message is answered; valid notifications are not."""
    if not line.strip():
        return False
    try:
        message = json.loads(line)
    except ValueError:
        return True
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return True
    if not isinstance(message.get("method"), str):
        return True
    if "params" in message and not isinstance(message["params"], dict):
        return True
    return "id" in message


def well_formed(message: dict[str, Any]) -> bool:
    if message.get("jsonrpc") != "2.0":
        return False
    if "method" in message:
        return isinstance(message["method"], str)
    if "error" in message:
        error = message["error"]
        return isinstance(error.get("code"), int) and isinstance(error.get("message"), str)
    return "result" in message and "id" in message


def test_fuzzed_stdio_input(registry_file: Any) -> None:
    config: Path = registry_file({"up": lite_server()})
    gateway = RawGateway(config)
    try:
        gateway.initialize()
        seen = {"count": 0}

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(MESSAGES)
        def one(line: str) -> None:
            assert gateway.process.stdin is not None and gateway.process.stdout is not None
            gateway.process.stdin.write((line + "\n").encode())
            gateway.process.stdin.flush()
            seen["count"] += 1
            marker = f"probe-{seen['count']}"
            gateway.send({"jsonrpc": "2.0", "id": marker, "method": "ping"})
            replies = []
            expected = 1 if expects_reply(line) else 0
            probed = False
            # Requests are served concurrently, so the probe's reply may overtake the fuzzed one's.
            while not probed or len(replies) < expected:
                raw = gateway.process.stdout.readline()
                assert raw, f"the gateway closed stdout after {line!r}\n{gateway.log()[-2000:]}"
                message = json.loads(raw)
                assert well_formed(message), (line, message)
                if message.get("id") == marker:
                    assert "result" in message
                    probed = True
                elif "method" not in message:  # notifications (e.g. list changes) are not replies
                    replies.append(message)
            assert len(replies) == expected, (line, replies)

        one()
        # still a working gateway afterwards
        assert gateway.call("up__echo", {"message": "alive"})["result"]["content"][0]["text"] == "alive"
        assert gateway.process.poll() is None
    finally:
        gateway.close()


def test_a_stdio_line_of_deeply_nested_json_gets_a_parse_error_and_the_gateway_goes_on(
    registry_file: Any,
) -> None:
    """100,000 open brackets used to crash the gateway (RecursionError); 300 went unanswered.
    The upstream is tiny.py (standard library, starts in milliseconds): only its echo is called."""
    tiny = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
    gateway = RawGateway(registry_file({"up": tiny}))
    try:
        gateway.initialize()
        for depth in (300, 100_000):
            nested = "[" * depth + "]" * depth
            line = f'{{"jsonrpc": "2.0", "id": "deep", "method": "tools/list", "params": {{"x": {nested}}}}}'
            assert gateway.process.stdin is not None and gateway.process.stdout is not None
            gateway.process.stdin.write((line + "\n").encode())
            gateway.process.stdin.flush()
            reply = json.loads(gateway.process.stdout.readline() or "null")
            assert reply is not None, gateway.log()[-2000:]
            assert reply["id"] is None and reply["error"]["code"] == -32700
            assert "nested more than 200 levels deep" in reply["error"]["message"]
        shallow = {"x": [[[[1]]]]}
        assert gateway.request("tools/list", shallow)["result"]["tools"]
        assert gateway.call("up__echo", {"message": "alive"})["result"]["content"][0]["text"] == "alive"
        assert gateway.process.poll() is None
    finally:
        gateway.close()


def _http_messages(response: Any) -> list[dict[str, Any]]:
    """The JSON-RPC messages in a response body: plain JSON, or the data lines of an SSE stream."""
    if not response.content:
        return []
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    body = response.json()
    return body if isinstance(body, list) else [body]


def test_fuzzed_http_input(registry_file: Any) -> None:
    import httpx

    from conftest import background, free_port, mcpgw_command

    config: Path = registry_file({"up": lite_server()})
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    modern = {"MCP-Protocol-Version": "2026-07-28"}
    base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    ping = {
        "jsonrpc": "2.0",
        "id": "probe",
        "method": "server/discover",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "fuzz", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    command = mcpgw_command("serve", "-t", "http", "--port", str(port), "--config", str(config))
    with background(command, port=port) as gateway, httpx.Client(timeout=10) as http:

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(MESSAGES, st.booleans())
        def one(body: str, stateless: bool) -> None:
            headers = {**base, **(modern if stateless else {})}
            response = http.post(url, content=body.encode(), headers=headers)
            assert response.status_code < 500, (body, response.status_code, response.text)
            messages = _http_messages(response)
            for message in messages:
                assert well_formed(message), (body, message)
            if response.status_code >= 400:
                assert messages and all("error" in m for m in messages), (body, response.text)
            alive = http.post(url, json=ping, headers={**base, **modern, "Mcp-Method": "server/discover"})
            assert alive.status_code == 200 and "result" in _http_messages(alive)[0], alive.text

        one()
        assert gateway.poll() is None
