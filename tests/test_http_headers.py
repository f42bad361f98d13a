"""The 2026-07-28 HTTP headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) on both of mcpgw's hops.

`mcpgw serve --transport http` (uvicorn with httptools, as users run it) in front of
`servers/headers.py`, whose SDK server rejects a `tools/call` whose `Mcp-Param-*`
headers do not match its arguments, as a routing intermediary relies on:
- upstream: mcpgw mirrors the tool's `x-mcp-header` arguments into `Mcp-Param-*`
  headers, as the SDK's `call_tool` does, withholds a tool whose annotations are
  invalid (a 2026-07-28 client must) and says so, and, as the SDK's client does,
  lists again and resends a call refused for stale headers;
- downstream: mcpgw reads header values as HTTP defines them (without the
  whitespace around them, which httptools keeps and h11 strips), and rejects a
  call whose headers disagree with its body.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import HEADER_MISMATCH

from conftest import SERVERS, background, free_port, mcpgw_command, run_mcpgw, write_registry

HEADERS = SERVERS / "headers.py"
MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    port = free_port()
    with background([sys.executable, str(HEADERS), str(port)], port=port):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def gateway_url(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("headers-gateway")
    config = write_registry(folder / "servers.toml", {"hdr": {"url": upstream_url, "namespace": ""}})
    # /mcp serves everything (no default persona); /personas/narrow/mcp only `evolve`, /personas/wide/mcp
    # `route` too.
    personas = '\n[personas.narrow]\nallow = ["evolve"]\n\n[personas.wide]\nallow = ["route", "evolve"]\n'
    config.write_text(config.read_text() + personas)
    port = free_port()
    command = mcpgw_command(
        "serve", "--config", str(config), "--transport", "http", "--port", str(port), "--log-level", "warning"
    )
    with background(command, port=port, env={"MCPGW_AUDIT_DB": str(folder / "audit.db")}):
        yield f"http://127.0.0.1:{port}/mcp"


async def _route(url: str, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any] | str]:
    async with Client(url, mode="auto", cache=None) as client:
        assert client.protocol_version == MODERN
        await client.list_tools()  # the SDK client mirrors headers only for tools it has listed
        result = await client.call_tool("route", arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    return result.is_error, (text if result.is_error else json.loads(text))


async def test_calls_through_mcpgw_carry_the_tools_mcp_param_headers(
    upstream_url: str, gateway_url: str
) -> None:
    """The upstream sees the same `Mcp-Param-*` headers from mcpgw as from a direct SDK client."""
    arguments = {"region": "Zürich", "count": 3, "note": "not mirrored"}
    direct = await _route(upstream_url, arguments)
    through = await _route(gateway_url, arguments)
    assert direct == (
        False,
        {
            "tool": "route",
            "arguments": arguments,
            "headers": {
                "mcp-name": "route",
                "mcp-param-region": "=?base64?WsO8cmljaA==?=",
                "mcp-param-count": "3",
            },
        },
    )
    assert through == direct


async def test_a_tool_with_an_invalid_x_mcp_header_is_withheld(upstream_url: str, gateway_url: str) -> None:
    """What a 2026-07-28 client must drop, mcpgw (the upstream's client) drops for every client it serves."""
    async with Client(upstream_url, mode="legacy", cache=None) as direct:
        assert [t.name for t in (await direct.list_tools()).tools] == ["route", "evolve", "broken"]
    async with Client(gateway_url, mode="legacy", cache=None) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["route", "evolve"]
        with pytest.raises(MCPError, match="Unknown tool: broken"):
            await client.call_tool("broken", {"data": {}})


def test_the_withheld_tool_is_reported_with_its_reason(upstream_url: str, tmp_path: Path) -> None:
    """`list-servers --check` (and the log at start) say which tool is missing, and why."""
    config = write_registry(tmp_path / "servers.toml", {"hdr": {"url": upstream_url, "namespace": ""}})
    done = run_mcpgw("list-servers", "--check", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["servers"][0]["tools"] == 2
    [problem] = report["problems"]
    assert problem.startswith("hdr: tool 'broken': invalid x-mcp-header annotation (property 'data'")


async def test_a_call_refused_for_stale_headers_is_sent_again_after_listing_again(gateway_url: str) -> None:
    """The spec's recovery (as the SDK client's): a HEADER_MISMATCH from the upstream means mcpgw's
    listing of the tool is stale; mcpgw lists again and resends, and its catalog has the new schema."""
    async with Client(gateway_url, mode="auto", cache=None) as client:
        await client.list_tools()
        first = await client.call_tool("evolve", {"tag": "v1"})
        assert json.loads(first.content[0].text)["headers"] == {"mcp-name": "evolve"}  # type: ignore[union-attr]
        second = await client.call_tool("evolve", {"tag": "v2"})
        assert not second.is_error
        seen = json.loads(second.content[0].text)["headers"]  # type: ignore[union-attr]
        assert seen == {"mcp-name": "evolve", "mcp-param-tag": "v2"}
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["evolve"].input_schema["properties"]["tag"]["x-mcp-header"] == "Tag"


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One raw HTTP/1.1 POST, header values sent byte for byte (httpx's h11 refuses edge whitespace)."""
    status, _, answer = _exchange(url, body, headers)
    return status, answer


def _exchange(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
    """`_post`, with the answer's head (its status line and header lines, lower-cased)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    data = json.dumps(body).encode()
    lines = [
        f"POST /{url.split('//')[1].split('/', 1)[1]} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        f"Content-Length: {len(data)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    text = payload.decode()
    lowered = head.decode("latin-1").lower()
    if "text/event-stream" in lowered:
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:") and line[5:].strip())
    return status, lowered, json.loads(text)


def _call(region: str, *, tool: str = "route", **headers: str) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"region": region}, "_meta": ENVELOPE},
    }
    sent = {
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
        "Mcp-Param-Region": region,
    }
    return body, {**sent, **headers}


@pytest.mark.parametrize("header", ["Mcp-Name", "Mcp-Method", "MCP-Protocol-Version", "Mcp-Param-Region"])
@pytest.mark.parametrize("space", [" ", "\t", "  \t"])
def test_whitespace_around_a_header_value_is_not_part_of_it(
    gateway_url: str, header: str, space: str
) -> None:
    """RFC 9110 §5.5: a field value excludes the whitespace around it, whichever HTTP parser runs."""
    body, headers = _call("eu-west1")
    headers[header] = f"{space}{headers[header]}{space}"
    status, answer = _post(gateway_url, body, headers)
    assert status == 200, answer
    assert json.loads(answer["result"]["content"][0]["text"])["headers"]["mcp-param-region"] == "eu-west1"


def test_an_answer_carries_its_date_but_names_no_server_software(gateway_url: str) -> None:
    """No `Server: uvicorn` line tells a caller what to probe; the `Date` HTTP asks of a server stays."""
    status, head, answer = _exchange(gateway_url, *_call("eu-west1"))
    assert status == 200, answer
    lines = head.split("\r\n")[1:]
    assert any(line.startswith("date: ") for line in lines), head
    assert not any(line.startswith("server:") for line in lines), head


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Mcp-Param-Region": "us-east1"}, "Mcp-Param-Region header does not match"),
        ({"Mcp-Param-Region": "=?base64?not base64?="}, "malformed base64"),
        ({"Mcp-Name": "other"}, "mcp-name header does not match"),
        ({"Mcp-Method": "tools/list"}, "mcp-method header does not match"),
    ],
)
def test_a_call_whose_headers_disagree_with_its_body_is_refused(
    gateway_url: str, headers: dict[str, str], says: str
) -> None:
    """The 2026-07-28 transport's MUST: a mismatch is a 400 with a JSON-RPC error, and nothing is called."""
    body, sent = _call("eu-west1", **headers)
    status, answer = _post(gateway_url, body, sent)
    assert status == 400
    assert answer["error"]["code"] == HEADER_MISMATCH and says in answer["error"]["message"]


@pytest.mark.parametrize("endpoint", ["/mcp", "/personas/wide/mcp"])
def test_a_missing_mcp_param_header_is_refused(gateway_url: str, endpoint: str) -> None:
    body, sent = _call("eu-west1")
    del sent["Mcp-Param-Region"]
    status, answer = _post(gateway_url.replace("/mcp", endpoint), body, sent)
    assert status == 400
    assert (
        answer["error"]["code"] == HEADER_MISMATCH
        and "Mcp-Param-Region header is missing" in answer["error"]["message"]
    )


@pytest.mark.parametrize("param_header", [None, "eu-west1", "wrong"])
def test_a_tool_hidden_from_the_persona_is_unknown_whatever_its_headers(
    gateway_url: str, param_header: str | None
) -> None:
    """The header check reads the caller's persona's catalog: for a tool the persona cannot see it
    has no schema, so the answer is the one a tool that does not exist gets, never a 400 that
    says the tool exists and which of its arguments travel in headers."""
    narrow = gateway_url.replace("/mcp", "/personas/narrow/mcp")
    extra = {} if param_header is None else {"Mcp-Param-Region": param_header}
    body, sent = _call("eu-west1", **extra)
    if param_header is None:
        del sent["Mcp-Param-Region"]
    hidden = _post(narrow, body, sent)
    body, sent = _call("eu-west1", tool="nosuch", **extra)
    if param_header is None:
        del sent["Mcp-Param-Region"]
    unknown = _post(narrow, body, sent)
    assert hidden[0] == unknown[0] == 400, (hidden, unknown)
    assert hidden[1]["error"] == {**unknown[1]["error"], "message": "Unknown tool: route"}
