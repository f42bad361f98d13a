"""HTTP/2 to an upstream over TLS that offers it (`upstream.transports`): its calls share one connection.

nginx (Debian's) serves the test upstream over TLS under a certificate from a CA made here, with
HTTP/2 offered or not; the gateway trusts that CA as a user would, through `SSL_CERT_FILE`. nginx's
access log says, for each request, which protocol it came in on, on which connection, and its body
(so its MCP method): what the upstream's operator sees. The gateway and its client are in memory.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import parity
from conftest import UPSTREAM, background, free_port
from mcpgw.config import validate
from services import running_nginx

pytestmark = pytest.mark.anyio

CALLS = 16


@dataclass
class Tls:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA, and a certificate it signed for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcpgw test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    """The test upstream over plain HTTP, for nginx to serve over TLS."""
    yield from _upstream("--http")


@pytest.fixture(scope="module")
def sse_upstream_port() -> Iterator[int]:
    """The test upstream over legacy SSE, plain, for nginx to serve over TLS."""
    yield from _upstream("--sse")


def _upstream(transport: str) -> Iterator[int]:
    port = free_port()
    with background([sys.executable, str(UPSTREAM), transport, str(port)], port=port):
        yield port


@contextmanager
def nginx_tls(
    home: Path, tls: Tls, upstream: int, *, http2: bool, port: int | None = None
) -> Iterator[tuple[int, Path]]:
    """nginx on TLS in front of `upstream`, HTTP/2 offered with `http2`, on `port` (default: a free
    one); yields its port and access log."""
    port = port or free_port()
    log = home / "access.log"
    conf = (
        "events {}\nhttp {\n"
        + "  log_format mcp escape=json '$server_protocol $connection $request_body';\n"
        + f"  access_log {log} mcp;\n"
        + "  server {\n"
        + f"    listen 127.0.0.1:{port} ssl{' http2' if http2 else ''};\n"
        + f"    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};\n"
        + "    location / {\n"
        + f"      proxy_pass http://127.0.0.1:{upstream};\n"
        + '      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
        + "      proxy_buffering off;\n      proxy_read_timeout 300s;\n"
        + "    }\n  }\n}\n"
    )
    with running_nginx(home, conf, port):
        yield port, log


async def _calls_at_once(url: str, era: str = "auto", **entry: Any) -> list[str]:
    """`CALLS` calls in flight at once through a gateway to `url` (spoken to in `era`; `entry`: more
    of the server's registry entry), each long enough to overlap the others; their texts."""
    config = validate({"servers": {"up": {"url": url, "era": era, **entry}}}, source="test")
    texts: list[str] = []
    async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
        assert gateway.upstreams["up"].state == "ready", gateway.upstreams["up"].error
        if "transport" not in entry:  # a streamable HTTP server: the era asked for, or found
            assert gateway.upstreams["up"].era == ("handshake" if era == "handshake" else "stateless")

        async def call() -> None:
            result = await client.call_tool("up__slow", {"steps": 2, "delay": 0.1})
            texts.append(result.content[0].text)  # type: ignore[union-attr]

        async with anyio.create_task_group() as tg:
            for _ in range(CALLS):
                tg.start_soon(call)
    return texts


def _calls_seen(log: Path) -> tuple[int, set[str], int]:
    """The `tools/call` requests in nginx's access log: how many, the protocols they came in on, and
    on how many connections."""
    calls = _requests(log, "tools/call")
    return len(calls), {protocol for protocol, _ in calls}, len({connection for _, connection in calls})


def _requests(log: Path, method: str) -> list[tuple[str, str]]:
    """(protocol, connection) of each JSON-RPC `method` request in nginx's access log (the body tells
    it in either era; the handshake era sends no `Mcp-Method` header)."""
    found = []
    for line in log.read_text().splitlines():
        protocol, connection, body = [*line.split(" ", 2), "", ""][:3]
        if f'"method":"{method}"' in body.replace(" ", "").replace("\\", ""):
            found.append((protocol, connection))
    return found


@pytest.mark.parametrize("era", ["auto", "handshake"])
async def test_calls_to_an_https_upstream_offering_http2_go_on_one_connection(
    era: str, tls: Tls, upstream_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both eras: the 2026-07-28 lean path's posts and the SDK's handshake-era session alike."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    with nginx_tls(tmp_path / "nginx", tls, upstream_port, http2=True) as (port, log):
        texts = await _calls_at_once(f"https://127.0.0.1:{port}/mcp", era)
    assert texts == ["done after 2 steps"] * CALLS
    assert _calls_seen(log) == (CALLS, {"HTTP/2.0"}, 1)  # all in flight at once, on one connection


async def test_a_legacy_sse_upstream_over_https_is_offered_http2_too(
    tls: Tls, sse_upstream_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SSE transport's client is built the same way: its stream and its posted messages share
    the one HTTP/2 connection."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    with nginx_tls(tmp_path / "nginx", tls, sse_upstream_port, http2=True) as (port, log):
        texts = await _calls_at_once(f"https://127.0.0.1:{port}/sse", transport="sse")
    assert texts == ["done after 2 steps"] * CALLS
    assert _calls_seen(log) == (CALLS, {"HTTP/2.0"}, 1)


@pytest.mark.parametrize(
    ("offered", "entry"), [(False, {}), (True, {"http2": False})], ids=["not-offered", "http2-false"]
)
async def test_an_https_upstream_is_reached_over_http1_when_it_or_the_registry_says_so(
    offered: bool,
    entry: dict[str, Any],
    tls: Tls,
    upstream_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP/2 is only offered: a server that does not take it is spoken to in HTTP/1.1, one
    connection per call in flight, as before; and `http2 = false` does not offer it at all."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    with nginx_tls(tmp_path / "nginx", tls, upstream_port, http2=offered) as (port, log):
        texts = await _calls_at_once(f"https://127.0.0.1:{port}/mcp", **entry)
    assert texts == ["done after 2 steps"] * CALLS
    count, protocols, connections = _calls_seen(log)
    assert (count, protocols) == (CALLS, {"HTTP/1.1"})
    assert connections > 1


async def test_an_https_upstream_whose_certificate_is_not_trusted_fails_with_the_reason(
    tls: Tls, upstream_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without its CA trusted, the upstream is not started, and its error says why (not a hang, not a
    bare 'connection failed')."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with nginx_tls(tmp_path / "nginx", tls, upstream_port, http2=True) as (port, _):
        config = validate({"servers": {"up": {"url": f"https://127.0.0.1:{port}/mcp"}}}, source="test")
        async with parity.served(config, {}, audit=None) as gateway:
            upstream = gateway.upstreams["up"]
            assert upstream.state != "ready"
            assert "certificate verify failed" in (upstream.error or "").lower(), upstream.error


async def test_a_call_after_the_server_closed_the_idle_http2_connection_goes_on_a_new_one(
    tls: Tls, upstream_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nginx stopped and started again between two calls (its idle timeout's GOAWAY closes the
    connection the same way): the second call is answered on a new connection. It used to be written
    to the closed one and fail (`WriteError`), failing the upstream with it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    port = free_port()
    config = validate({"servers": {"up": {"url": f"https://127.0.0.1:{port}/mcp"}}}, source="test")
    with ExitStack() as first:
        first.enter_context(nginx_tls(tmp_path / "first", tls, upstream_port, http2=True, port=port))
        async with parity.served(config, {}, audit=None) as gateway, parity.gateway_client(gateway) as client:
            before = await client.call_tool("up__echo", {"message": "before"})
            first.close()  # nginx stopped: the gateway's one connection to it is closed
            with nginx_tls(tmp_path / "second", tls, upstream_port, http2=True, port=port) as (_, log):
                after = await client.call_tool("up__echo", {"message": "after"})
                assert gateway.upstreams["up"].state == "ready"
    assert before.content[0].text == "before"  # type: ignore[union-attr]
    assert not after.is_error
    assert after.content[0].text == "after"  # type: ignore[union-attr]
    assert _calls_seen(log)[1] == {"HTTP/2.0"}
