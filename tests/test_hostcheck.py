"""DNS-rebinding guard on `mcpgw serve --transport http`: Host and Origin headers are checked.

The conformance suite's `dns-rebinding-protection` scenario checks the default
(loopback only); these tests add what it does not: a bad Origin with a good
Host, names added in `[gateway]`, persona endpoints, and a broken setting.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.server.transport_security import TransportSecuritySettings

from conftest import INITIALIZE, SERVERS, background, free_port, mcpgw_command, write_registry
from mcpgw import config
from mcpgw.errors import ConfigError
from mcpgw.server.hostcheck import HostCheck


@pytest.fixture(scope="module")
def gateway_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("hostcheck")
    fixture = {"command": sys.executable, "args": [str(SERVERS / "conformance.py")]}
    config_file = write_registry(
        folder / "servers.toml",
        {"fixture": fixture},
        allowed_hosts=["mcp.example.test"],
        allowed_origins=["https://app.example.test"],
    )
    with (config_file.parent / "servers.toml").open("a") as handle:
        handle.write('\n[personas.ops]\nallow = ["*"]\n')
    port = free_port()
    command = mcpgw_command(
        "serve",
        "--config",
        str(config_file),
        "--transport",
        "http",
        "--port",
        str(port),
        "--log-level",
        "error",
    )
    with background(command, port=port, env={"MCPGW_AUDIT_DB": str(folder / "audit.db")}):
        yield port


def post(port: int, *, host: str, origin: str | None = None, path: str = "/mcp") -> httpx.Response:
    headers = {"Host": host, "Accept": "application/json, text/event-stream"}
    if origin is not None:
        headers["Origin"] = origin
    return httpx.post(f"http://127.0.0.1:{port}{path}", json=INITIALIZE, headers=headers, timeout=10)


def test_loopback_hosts_and_origins_are_served(gateway_port: int) -> None:
    for host in (f"127.0.0.1:{gateway_port}", f"localhost:{gateway_port}", "localhost"):
        response = post(gateway_port, host=host, origin=f"http://{host}")
        assert response.status_code == 200, (host, response.text)


def test_a_foreign_host_is_refused(gateway_port: int) -> None:
    response = post(gateway_port, host="evil.example.com", origin="http://evil.example.com")
    assert response.status_code == 421
    assert "Host" in response.text


def test_a_foreign_origin_with_a_loopback_host_is_refused(gateway_port: int) -> None:
    response = post(gateway_port, host=f"127.0.0.1:{gateway_port}", origin="http://evil.example.com")
    assert response.status_code == 403
    assert "Origin" in response.text


def test_persona_endpoints_are_guarded_too(gateway_port: int) -> None:
    path = "/personas/ops/mcp"
    assert post(gateway_port, host="evil.example.com", path=path).status_code == 421
    assert post(gateway_port, host=f"localhost:{gateway_port}", path=path).status_code == 200


def test_hosts_and_origins_named_in_gateway_settings_are_served(gateway_port: int) -> None:
    assert post(gateway_port, host="mcp.example.test").status_code == 200
    assert (
        post(gateway_port, host="mcp.example.test:443", origin="https://app.example.test").status_code == 200
    )
    assert post(gateway_port, host="mcp.example.test", origin="https://other.example.test").status_code == 403
    assert post(gateway_port, host="other.example.test").status_code == 421


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allowed_origins", "app.example.test"),
        ("allowed_origins", "https://app.test/path"),
        ("allowed_hosts", ""),
    ],
)
def test_a_malformed_allowed_value_is_a_config_error(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(f'[gateway]\n{key} = ["{value}"]\n[servers.x]\ncommand = "x"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert key in str(caught.value)


@pytest.mark.anyio
async def test_one_loopback_rule_for_the_exposure_policy_and_the_host_check() -> None:
    """A gateway on 127.0.0.2 is loopback: production needs no [auth], and its own address is served."""
    from mcp.server.transport_security import TransportSecurityMiddleware
    from starlette.requests import Request

    from mcpgw.server import auth, hostcheck

    assert auth.is_loopback is hostcheck.is_loopback
    for host in ("127.0.0.2", "127.255.255.254", "localhost", "::1", "[::1]"):
        assert hostcheck.is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.2", "localhost.example.com", "::"):
        assert not hostcheck.is_loopback(host), host
    production = config.Registry.model_validate({"gateway": {"mode": "production"}})
    assert auth.check_exposure(production, host="127.0.0.2") == []
    check = TransportSecurityMiddleware(hostcheck.transport_security(production, bind="127.0.0.2"))

    async def status(host: str, origin: str) -> int:
        headers = [
            (b"host", host.encode()),
            (b"origin", origin.encode()),
            (b"content-type", b"application/json"),
        ]
        request = Request({"type": "http", "method": "POST", "path": "/mcp", "headers": headers})
        refusal = await check.validate_request(request, is_post=True)
        return 200 if refusal is None else refusal.status_code

    assert await status("127.0.0.2:8000", "http://127.0.0.2:8000") == 200
    assert await status("127.0.0.2", "https://127.0.0.2") == 200
    assert await status("localhost:8000", "http://localhost:8000") == 200
    assert await status("evil.example.com", "http://127.0.0.2:8000") == 421
    assert await status("127.0.0.2:8000", "http://evil.example.com") == 403


@pytest.mark.anyio
async def test_an_accepted_host_does_not_let_a_rebound_one_through() -> None:
    """Accepted Host and Origin pairs are remembered; every other pair is still checked, on the same
    instance, after them (and a repeated header counts by its first value, as the check reads it)."""
    settings = TransportSecuritySettings(allowed_hosts=["127.0.0.1:*"], allowed_origins=[])
    entered: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        entered.append(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    check = HostCheck(app, settings=settings)

    async def status(*headers: tuple[bytes, bytes]) -> int:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": list(headers)}
        await check(scope, None, send)
        return int(sent[0]["status"])

    good = (b"host", b"127.0.0.1:8000")
    evil = (b"host", b"evil.example.com")
    for _ in range(2):
        assert await status(good) == 200
        assert await status(evil) == 421
        assert await status(good, (b"origin", b"http://evil.example.com")) == 403
        assert await status(evil, good) == 421
        assert await status(good, evil) == 200
    assert len(entered) == 4
