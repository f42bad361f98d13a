"""Resumable SSE streams through mcpgw's HTTP transport: a client drops a call's stream and resumes it.

A real gateway (HTTP) in front of our stdio test upstream; the client is raw
httpx speaking the 2025-11-25 wire, so the test controls exactly when the
connection drops and what `Last-Event-ID` it sends back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import mcp_types
import pytest
import tomlkit

from conftest import background, free_port, lite_server, mcpgw_command
from mcpgw.server.resume import BoundedEventStore

pytestmark = pytest.mark.anyio

VERSION = "2025-11-25"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("resume")
    config = home / "servers.toml"
    config.write_text(tomlkit.dumps({"servers": {"up": lite_server()}}))
    port = free_port()
    command = mcpgw_command("serve", "-c", str(config), "-t", "http", "--port", str(port))
    env = {"MCPGW_AUDIT_DB": str(home / "audit.db")}
    with background([*command, "--log-level", "warning"], port=port, env=env):
        yield f"http://127.0.0.1:{port}/mcp"


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE events (`id`, `data`, ...) from a line iterator, as they arrive."""
    event: dict[str, str] = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
            continue
        key, _, value = line.partition(":")
        event[key] = event.get(key, "") + value.removeprefix(" ")


def session(client: httpx.Client, url: str) -> dict[str, str]:
    """Initialize a 2025-11-25 session; the headers its later requests carry."""
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    response = client.post(url, json=body, headers=ACCEPT)
    assert response.status_code == 200, response.text
    headers = {
        **ACCEPT,
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": VERSION,
    }
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert client.post(url, json=note, headers=headers).status_code == 202
    return headers


def slow_call(request_id: int, steps: int) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": "up__slow",
            "arguments": {"steps": steps, "delay": 0.2},
            "_meta": {"progressToken": f"p{request_id}"},
        },
    }


def test_a_dropped_call_stream_resumes_with_last_event_id(gateway: str) -> None:
    with httpx.Client(timeout=30) as client:
        headers = session(client, gateway)
        seen: list[dict[str, str]] = []
        with client.stream("POST", gateway, json=slow_call(7, steps=5), headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(response.iter_lines()):
                seen.append(event)
                if event.get("data"):  # the priming event, then the first progress notification: drop
                    break
        priming, first = seen[0], seen[-1]
        assert priming["id"] and priming.get("data", "") == ""  # mcpgw primes the stream with an id
        assert priming["retry"] == "1000"  # and tells the client when to reconnect
        assert json.loads(first["data"])["params"]["progress"] == 1
        # Reconnect with the last id seen: the missed progress and the result arrive, nothing twice.
        resumed = {**headers, "Last-Event-ID": first["id"]}
        messages: list[dict[str, Any]] = []
        with client.stream("GET", gateway, headers=resumed) as response:
            assert response.status_code == 200
            for event in sse_events(response.iter_lines()):
                if event.get("data"):
                    messages.append(json.loads(event["data"]))
                    if "id" in messages[-1]:
                        break
    progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    assert progress == [2, 3, 4, 5]
    assert messages[-1]["id"] == 7
    assert messages[-1]["result"]["content"] == [{"type": "text", "text": "done after 5 steps"}]


def test_another_session_cannot_resume_a_stream_it_does_not_own(gateway: str) -> None:
    with httpx.Client(timeout=30) as client:
        alice = session(client, gateway)
        with client.stream("POST", gateway, json=slow_call(1, steps=2), headers=alice) as response:
            events = list(sse_events(response.iter_lines()))
        assert json.loads(events[-1]["data"])["result"]["content"][0]["text"] == "done after 2 steps"
        bob = session(client, gateway)  # same request ids, another session: its own stream namespace
        response = client.get(gateway, headers={**bob, "Last-Event-ID": events[0]["id"]}, timeout=5)
        assert "done after 2 steps" not in response.text
        assert "progress" not in response.text


def test_unknown_last_event_id_gets_an_empty_stream_not_an_error_page(gateway: str) -> None:
    with httpx.Client(timeout=30) as client:
        headers = session(client, gateway)
        response = client.get(gateway, headers={**headers, "Last-Event-ID": "no-such-event"}, timeout=5)
    assert response.status_code == 200 and "data: {" not in response.text


def _message(n: int, size: int = 10) -> mcp_types.JSONRPCNotification:
    return mcp_types.JSONRPCNotification(
        jsonrpc="2.0", method="notifications/message", params={"level": "info", "data": "x" * size, "n": n}
    )


async def test_the_store_is_bounded_per_stream_in_events_and_in_bytes() -> None:
    store = BoundedEventStore(per_stream=3, max_events=5, max_bytes=2_000)
    ids = [await store.store_event("a", _message(n)) for n in range(5)]
    replayed: list[Any] = []

    async def collect(event: Any) -> None:
        replayed.append(event.message.params["n"])

    assert store.events == 3  # a stream keeps its last 3 events
    assert await store.replay_events_after(ids[0], collect) is None  # evicted: nothing to resume from
    assert await store.replay_events_after(ids[2], collect) == "a" and replayed == [3, 4]
    for n in range(3):
        await store.store_event(f"s{n}", _message(n))
    assert store.events == 5  # 5 events in all: stream a's oldest went first
    big = [await store.store_event("big", _message(n, size=600)) for n in range(3)]
    assert store.bytes <= 2_000 and store.events <= 5
    replayed.clear()
    assert await store.replay_events_after(big[1], collect) == "big" and replayed == [2]
    huge = await store.store_event("huge", _message(0, size=5_000))  # larger than the whole store
    assert store.bytes <= 2_000
    assert await store.replay_events_after(huge, collect) is None
