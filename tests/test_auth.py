"""OAuth 2.1 on the HTTP transport, upstream credentials and production mode, with real parts only.

A small authorization server (`servers/issuer.py`) signs tokens, serves and
rotates its JWKS and answers the client-credentials grant; the test upstream
accepts only tokens from it (so the gateway must get its own), and records
every call it receives (`UPSTREAM_CALL_LOG`), so "no upstream saw a call" is
asserted on the upstream's side.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import tomlkit
from fastmcp import Client

from conftest import (
    INITIALIZE,
    PROCESS_LIMIT,
    SERVERS,
    TLS,
    UPSTREAM,
    background,
    free_port,
    inspector_command,
    mcpgw_command,
    run_mcpgw,
)
from mcpgw import config
from mcpgw.audit.fold import Folds
from mcpgw.errors import ConfigError

pytestmark = pytest.mark.anyio

ISSUER = SERVERS / "issuer.py"
SCOPE = "mcp:tools"
TOKEN_TTL = 4
REFRESH_BEFORE = 2
PERSONAS = {"dev": {}, "reader": {"allow": ["up__echo"]}}
ECHO_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "up__echo", "arguments": {"message": "should never arrive"}},
}
BROWSER_ORIGIN = "http://localhost:6274"
PUBLIC_ORIGIN = "https://inspector.example.com"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Stack:
    issuer: str
    gateway: str
    upstream: str
    calls: Path
    audit: Path

    def mint(self, forge: str | None = None, drop: tuple[str, ...] = (), **claims: Any) -> str:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",
            "client_id": "cli-1",
            "aud": f"{self.gateway}/mcp",
            "scope": SCOPE,
            "mcpgw_persona": "reader",
            "iat": now,
            "exp": now + 300,
        }
        body = {k: v for k, v in {**base, **claims}.items() if k not in drop}
        response = httpx.post(f"{self.issuer}/mint", json={"claims": body, "forge": forge}, verify=TLS)
        response.raise_for_status()
        return str(response.json()["token"])

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.issuer}/stats", verify=TLS).json())

    def upstream_calls(self) -> list[dict[str, Any]]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]


def _registry(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(tomlkit.dumps(document))
    return path


def _serve(config_path: Path, port: int, *extra: str) -> list[str]:
    return mcpgw_command(
        "serve",
        "--config",
        str(config_path),
        "-t",
        "http",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    )


def _wait_ready(base: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/healthz", verify=TLS)
        body = response.json()
        if response.status_code == 200 or any(u["state"] == "failed" for u in body["upstreams"].values()):
            return body
        time.sleep(0.1)
    raise TimeoutError(f"gateway at {base} not ready: {body}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Issuer, an upstream that wants the issuer's tokens, and a gateway with [auth] and upstream OAuth."""
    tmp = tmp_path_factory.mktemp("auth")
    issuer_port, upstream_port, gateway_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    upstream = f"http://127.0.0.1:{upstream_port}/mcp"
    gateway = f"http://127.0.0.1:{gateway_port}"
    calls, audit = tmp / "calls.jsonl", tmp / "audit.db"
    secrets = tmp / "secrets.env"
    secrets.write_text("UP_CLIENT_SECRET=s3cret\n")
    secrets.chmod(0o600)
    registry = _registry(
        tmp / "servers.toml",
        {
            "gateway": {"secrets_file": str(secrets), "cors_origins": [BROWSER_ORIGIN, PUBLIC_ORIGIN]},
            "servers": {
                "up": {
                    "url": upstream,
                    "oauth": {
                        "token_url": f"{issuer}/token",
                        "client_id": "mcpgw",
                        "client_secret": "${UP_CLIENT_SECRET}",
                        "resource": upstream,
                        "refresh_before": REFRESH_BEFORE,
                    },
                }
            },
            "personas": PERSONAS,
            "auth": {
                "issuer": issuer,
                "jwks_url": f"{issuer}/jwks",
                "public_url": gateway,
                "required_scopes": [SCOPE],
                "persona_claim": "mcpgw_persona",
                "jwks_min_refresh_seconds": 0.5,
            },
        },
    )
    upstream_env = {
        "UPSTREAM_CALL_LOG": str(calls),
        "UPSTREAM_JWKS_URL": f"{issuer}/jwks",
        "UPSTREAM_ISSUER": issuer,
        "UPSTREAM_AUDIENCE": upstream,
    }
    with (
        background(
            [sys.executable, str(ISSUER), str(issuer_port), "--token-ttl", str(TOKEN_TTL)], port=issuer_port
        ),
        background(
            [sys.executable, str(UPSTREAM), "--http", str(upstream_port)],
            port=upstream_port,
            env=upstream_env,
        ),
        background(
            _serve(registry, gateway_port), port=gateway_port, env={"MCPGW_AUDIT_DB": str(audit)}
        ) as process,
    ):
        health = _wait_ready(gateway)
        assert health["upstreams"]["up"]["state"] == "ready", (health, process.stderr)
        yield Stack(issuer=issuer, gateway=gateway, upstream=upstream, calls=calls, audit=audit)


def _post(url: str, token: str | None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(url, json=ECHO_CALL, headers=headers, verify=TLS)


async def _tools(url: str, token: str) -> set[str]:
    async with Client(url, auth=token) as client:
        return {tool.name for tool in await client.list_tools()}


# --- protocol ----------------------------------------------------------------------------------


def test_protected_resource_metadata_names_the_issuer(stack: Stack) -> None:
    for suffix, resource in [
        ("", stack.gateway),
        ("/mcp", f"{stack.gateway}/mcp"),
        ("/personas/reader/mcp", f"{stack.gateway}/personas/reader/mcp"),
    ]:
        response = httpx.get(f"{stack.gateway}/.well-known/oauth-protected-resource{suffix}")
        assert response.status_code == 200, suffix
        body = response.json()
        assert body["resource"] == resource
        assert body["authorization_servers"] == [stack.issuer]
        assert body["scopes_supported"] == [SCOPE]
    unknown = httpx.get(f"{stack.gateway}/.well-known/oauth-protected-resource/personas/nobody/mcp")
    assert unknown.status_code == 404


def test_missing_token_gets_401_with_resource_metadata(stack: Stack) -> None:
    for path in ("/mcp", "/personas/dev/mcp"):
        response = _post(f"{stack.gateway}{path}", None)
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'resource_metadata="{stack.gateway}/.well-known/oauth-protected-resource{path}"' in challenge
        assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no credentials were sent
    assert stack.upstream_calls() == []
    rows = audit_rows(
        stack,
        "SELECT method, persona FROM events WHERE kind = 'auth' AND error = 'no bearer token'",
        at_least=2,
    )
    assert ("POST /personas/dev/mcp", "dev") in rows


BAD_TOKENS: dict[str, tuple[dict[str, Any], str]] = {
    # case: (how the token is made, why the audit log says it was refused)
    "expired": ({"exp": -120, "iat": -400}, "ExpiredTokenError"),
    "not yet valid": ({"nbf": 600}, "not yet valid"),
    "wrong issuer": ({"iss": "http://127.0.0.1:9/"}, "'iss'"),
    "wrong audience": ({"aud": "http://127.0.0.1:9/mcp"}, "'aud'"),
    "bad signature": ({"forge": "foreign"}, "BadSignatureError"),
    "alg none": ({"forge": "none"}, "algorithm 'none' is not among"),
    "HS256 keyed with the public key": ({"forge": "hs"}, "algorithm 'HS256' is not among"),
    "unknown key": ({"forge": "unknown-kid"}, "unknown key id"),
    "no expiry": ({"drop": ("exp",)}, "MissingClaimError"),
    "not a JWT": ({"raw": "not-a-jwt"}, "not a signed JWT"),
}


def audit_rows(stack: Stack, sql: str, *params: Any, at_least: int = 1) -> list[tuple[Any, ...]]:
    """Rows of the gateway's audit log, waiting out its writer's batching."""
    rows: list[tuple[Any, ...]] = []
    for _ in range(100):
        with sqlite3.connect(stack.audit) as db:
            rows = db.execute(sql, params).fetchall()
        if len(rows) >= at_least:
            break
        time.sleep(0.05)
    return rows


def folded_rows(stack: Stack, error_like: str, *, total: int) -> list[tuple[Any, ...]]:
    """The auth rows whose error is like `error_like`, once their counts add up to `total`."""
    rows: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + PROCESS_LIMIT  # a hang guard: the audit writer batches its rows
    while time.monotonic() < deadline:
        rows = audit_rows(
            stack,
            "SELECT outcome, method, error, json_extract(result, '$.count') FROM events"
            " WHERE kind = 'auth' AND error LIKE ?",
            error_like,
        )
        if sum(row[3] for row in rows) >= total:
            break
        time.sleep(0.05)
    assert sum(row[3] for row in rows) == total, rows
    return rows


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_token_gets_401_and_no_upstream_call(stack: Stack, case: str) -> None:
    made, reason = BAD_TOKENS[case]
    spec = dict(made)
    if "raw" in spec:
        token = spec["raw"]
    else:
        now = int(time.time())
        claims = {k: now + v if k in ("exp", "iat", "nbf") else v for k, v in spec.items() if k != "drop"}
        forge = claims.pop("forge", None)
        token = stack.mint(forge=forge, drop=spec.get("drop", ()), **claims)
    response = _post(f"{stack.gateway}/mcp", token)
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert f'resource_metadata="{stack.gateway}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert response.json()["error"] == "invalid_token"
    assert [c for c in stack.upstream_calls() if c["arguments"].get("message") == "should never arrive"] == []
    rows = audit_rows(
        stack, "SELECT outcome, method, error FROM events WHERE kind = 'auth' AND error LIKE ?", f"%{reason}%"
    )
    assert rows and rows[-1][:2] == ("denied", "POST /mcp"), rows


def test_missing_scope_gets_403_insufficient_scope(stack: Stack) -> None:
    response = _post(f"{stack.gateway}/mcp", stack.mint(scope="profile"))
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert f"Required scope: {SCOPE}" in challenge
    rows = audit_rows(
        stack, "SELECT principal, error FROM events WHERE kind = 'auth' AND error LIKE '%scopes%'"
    )
    assert rows == [("sub=alice client_id=cli-1", f"token lacks the required scopes ['{SCOPE}']")]
    assert f'resource_metadata="{stack.gateway}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert [c for c in stack.upstream_calls() if c["arguments"].get("message") == "should never arrive"] == []


def test_unknown_key_ids_refetch_the_jwks_at_a_bounded_rate(stack: Stack) -> None:
    before = stack.stats()["jwks_fetches"]
    started = time.monotonic()
    for _ in range(12):
        assert _post(f"{stack.gateway}/mcp", stack.mint(forge="unknown-kid")).status_code == 401
    elapsed = time.monotonic() - started
    fetched = stack.stats()["jwks_fetches"] - before
    assert 1 <= fetched <= 1 + elapsed / 0.5, (fetched, elapsed)


def test_cors_lets_a_listed_browser_origin_read_the_challenge(stack: Stack) -> None:
    preflight = httpx.options(
        f"{stack.gateway}/mcp",
        headers={
            "Origin": BROWSER_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == BROWSER_ORIGIN
    refused = httpx.post(
        f"{stack.gateway}/mcp", json=ECHO_CALL, headers={**MCP_HEADERS, "Origin": BROWSER_ORIGIN}
    )
    assert refused.status_code == 401
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
    other = httpx.options(
        f"{stack.gateway}/mcp",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_listed_origins_pass_the_dns_rebinding_check_and_others_do_not(stack: Stack) -> None:
    token = stack.mint(mcpgw_persona="reader")
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    allowed = httpx.post(
        f"{stack.gateway}/mcp", json=INITIALIZE, headers={**headers, "Origin": PUBLIC_ORIGIN}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == PUBLIC_ORIGIN
    evil = httpx.post(
        f"{stack.gateway}/mcp", json=INITIALIZE, headers={**headers, "Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    assert evil.text == "Invalid Origin header"


def test_behind_a_proxy_the_public_host_is_accepted() -> None:
    from mcpgw.server.hostcheck import transport_security

    registry = config.Registry.model_validate(
        {
            "auth": {
                "issuer": "https://a",
                "jwks_url": "https://a/jwks",
                "public_url": "https://mcp.example.com",
            }
        }
    )
    security = transport_security(registry, bind="127.0.0.1")
    assert "mcp.example.com" in security.allowed_hosts
    assert "https://mcp.example.com" in security.allowed_origins
    bare = transport_security(config.Registry(), bind="127.0.0.1")
    assert "mcp.example.com" not in bare.allowed_hosts
    assert not [o for o in bare.allowed_origins if "example.com" in o]


async def test_jwks_outage_refuses_tokens_and_is_not_refetched_per_request(stack: Stack) -> None:
    from mcpgw.server import auth

    settings = config.AuthSettings(
        issuer=stack.issuer, jwks_url=f"{stack.issuer}/broken-jwks", public_url=stack.gateway
    )
    verifier = auth.JWTVerifier(settings)
    token = stack.mint()
    before = stack.stats()["broken_jwks_fetches"]
    assert await verifier.verify_token(token) is None
    for _ in range(5):
        with pytest.raises(auth.KeysUnavailable, match=r"JWKS unavailable: .*503") as caught:
            await verifier.check(token)
        assert 0 < caught.value.retry_after <= settings.jwks_min_refresh_seconds
    assert stack.stats()["broken_jwks_fetches"] == before + 1


def _initialize(stack: Stack, token: str) -> httpx.Response:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    return httpx.post(f"{stack.gateway}/mcp", json=INITIALIZE, headers=headers, verify=TLS)


def test_jwks_outage_answers_503_with_retry_after_and_cached_keys_keep_working(stack: Stack) -> None:
    known = stack.mint()
    assert _initialize(stack, known).status_code == 200  # its key is now in the gateway's cache
    httpx.post(f"{stack.issuer}/jwks-outage", json={"on": True}).raise_for_status()
    try:
        time.sleep(0.6)  # past jwks_min_refresh_seconds: the next unknown key id refetches
        before = stack.stats()["jwks_fetches"]
        started = time.monotonic()
        unknown = stack.mint(forge="unknown-kid")
        for _ in range(5):
            response = _post(f"{stack.gateway}/mcp", unknown)
            assert response.status_code == 503, response.text
            assert 1 <= int(response.headers["retry-after"]) <= 1  # jwks_min_refresh_seconds, rounded up
            assert response.json()["error"] == "temporarily_unavailable"
            assert "signing keys could not be fetched" in response.json()["error_description"]
            assert "invalid_token" not in response.headers.get("www-authenticate", "")
        fetched = stack.stats()["jwks_fetches"] - before
        assert 1 <= fetched <= 1 + (time.monotonic() - started) / 0.5, fetched
        # A token whose key id is cached is checked as usual while the issuer is down.
        assert _initialize(stack, known).status_code == 200
        assert _post(f"{stack.gateway}/mcp", stack.mint(aud="http://127.0.0.1:9/mcp")).status_code == 401
    finally:
        httpx.post(f"{stack.issuer}/jwks-outage", json={"on": False}).raise_for_status()
    assert [c for c in stack.upstream_calls() if c["arguments"].get("message") == "should never arrive"] == []
    # The five refusals are alike (reason, endpoint, peer): one row stands for them, with their count.
    rows = folded_rows(stack, "%signing keys could not be fetched%", total=5)
    assert {row[:2] for row in rows} == {("error", "POST /mcp")}, rows
    assert all("JWKS unavailable" in row[2] and unknown not in row[2] for row in rows)


def test_persona_from_a_scope_prefix_or_a_mapped_group() -> None:
    from mcpgw.server import auth

    base = {"issuer": "https://a", "jwks_url": "https://a/jwks", "public_url": "https://gw"}
    by_scope = config.AuthSettings(**base, persona_claim="scope", persona_prefix="mcpgw:persona:")
    claims = {"scope": "mcp:tools mcpgw:persona:dev mcpgw:persona:ghost reader"}
    assert auth.granted_personas(by_scope, claims, ["dev", "reader"]) == ["dev"]
    by_group = config.AuthSettings(**base, persona_claim="groups", persona_map={"eng-oncall": "dev"})
    claims = {"groups": ["staff", "eng-oncall", "reader"]}
    assert auth.granted_personas(by_group, claims, ["dev", "reader"]) == ["dev", "reader"]
    assert auth.granted_personas(by_group, {"groups": 7}, ["dev"]) == []


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_inspector_cli_with_a_bearer_header(
    stack: Stack, era: str, node22: str, inspector_js: str
) -> None:
    token = stack.mint(mcpgw_persona="reader")
    command = inspector_command(
        node22,
        inspector_js,
        era,
        "--header",
        f"Authorization: Bearer {token}",
        "--method",
        "tools/call",
        "--tool-name",
        "up__echo",
        "--tool-arg",
        f"message=inspector {era}",
        target=[f"{stack.gateway}/mcp"],
    )
    with anyio.fail_after(60):
        done = await anyio.run_process(
            command, check=False, env={**os.environ, "HOME": str(stack.calls.parent)}
        )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)["result"]
    assert result["content"] == [{"type": "text", "text": f"inspector {era}"}]
    assert [c for c in stack.upstream_calls() if c["arguments"] == {"message": f"inspector {era}"}]


# --- personas and the principal ---------------------------------------------------------------


async def test_valid_token_reaches_its_persona_and_is_audited(stack: Stack) -> None:
    token = stack.mint(sub="alice", client_id="cli-1", mcpgw_persona="reader")
    assert await _tools(f"{stack.gateway}/mcp", token) == {"up__echo"}
    assert await _tools(f"{stack.gateway}/personas/reader/mcp", token) == {"up__echo"}
    async with Client(f"{stack.gateway}/mcp", auth=token) as client:
        result = await client.call_tool("up__echo", {"message": "hello from alice"})
    assert result.content[0].text == "hello from alice"  # type: ignore[union-attr]
    [call] = [c for c in stack.upstream_calls() if c["arguments"] == {"message": "hello from alice"}]
    # The upstream saw the gateway's own client-credentials token, never the caller's.
    assert call["bearer"] != token
    assert call["token"]
    rows: list[tuple[str, str]] = []
    for _ in range(100):
        with sqlite3.connect(stack.audit) as db:
            rows = db.execute(
                "SELECT persona, principal FROM events"
                " WHERE kind = 'call' AND arguments LIKE '%hello from alice%'"
            ).fetchall()
        if rows:
            break
        await anyio.sleep(0.05)
    assert rows == [("reader", "sub=alice client_id=cli-1")]


async def test_an_event_stream_is_closed_when_its_token_expires(stack: Stack) -> None:
    """A GET stream opened with a token that has 3 s left ends then; the token is refused after."""
    skew = config.AuthSettings.model_fields["clock_skew"].default
    token = stack.mint(exp=int(time.time()) + 3 - int(skew))  # valid for 3 more seconds, skew included
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30) as http:
        opened = await http.post(f"{stack.gateway}/mcp", json=INITIALIZE, headers=headers)
        assert opened.status_code == 200, opened.text
        session = {
            **headers,
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "MCP-Protocol-Version": "2025-11-25",
        }
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(f"{stack.gateway}/mcp", json=initialized, headers=session)).status_code == 202
        started = time.monotonic()
        with anyio.fail_after(15):
            async with http.stream(
                "GET", f"{stack.gateway}/mcp", headers={**session, "Accept": "text/event-stream"}
            ) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                with contextlib.suppress(httpx.RemoteProtocolError):  # cut mid-stream
                    async for _ in stream.aiter_bytes():
                        pass
        lasted = time.monotonic() - started
        assert 1.0 < lasted < 10, lasted  # open while the token was valid, closed at its expiry
        refused = await http.post(f"{stack.gateway}/mcp", json=ECHO_CALL, headers=session)
        assert refused.status_code == 401
    for _ in range(100):
        with sqlite3.connect(stack.audit) as db:
            rows = db.execute(
                "SELECT outcome, error FROM events WHERE kind = 'auth' AND outcome = 'expired'"
            ).fetchall()
        if rows:
            break
        await anyio.sleep(0.05)
    assert rows == [("expired", "token expired; its open event stream was closed")]
    found = run_mcpgw(
        *("logs", "--config", str(stack.audit.parent / "servers.toml"), "--outcome", "expired", "--json"),
        env={"MCPGW_AUDIT_DB": str(stack.audit)},
    )
    assert found.returncode == 0, found.stderr
    assert [json.loads(line)["kind"] for line in found.stdout.splitlines()] == ["auth"]


async def test_persona_endpoint_cannot_escape_the_tokens_persona(stack: Stack) -> None:
    reader = stack.mint(mcpgw_persona="reader")
    response = _post(f"{stack.gateway}/personas/dev/mcp", reader)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert "does not grant persona 'dev'" in response.json()["error_description"]
    rows = audit_rows(
        stack, "SELECT persona, outcome FROM events WHERE kind = 'auth' AND error LIKE '%grant persona%'"
    )
    assert rows == [("dev", "denied")]
    both = stack.mint(mcpgw_persona="dev reader")
    assert _post(f"{stack.gateway}/mcp", both).status_code == 403  # ambiguous: pick one by URL
    assert "up__add" in await _tools(f"{stack.gateway}/personas/dev/mcp", both)
    nobody = stack.mint(drop=("mcpgw_persona",))
    response = _post(f"{stack.gateway}/mcp", nobody)
    assert response.status_code == 403
    assert "names no configured persona" in response.json()["error_description"]
    assert [c for c in stack.upstream_calls() if c["arguments"].get("message") == "should never arrive"] == []


async def test_key_rotation_needs_no_restart(stack: Stack) -> None:
    old = stack.mint()
    assert await _tools(f"{stack.gateway}/mcp", old) == {"up__echo"}
    httpx.post(f"{stack.issuer}/rotate").raise_for_status()
    new = stack.mint()
    assert json.loads(httpx.get(f"{stack.issuer}/jwks").text)["keys"][-1]["kid"] in _header_kid(new)
    # The new key id is looked up once `jwks_min_refresh_seconds` (0.5 s) has passed since the last
    # fetch, which may have been the call just above: until then the token is refused, after it taken.
    deadline = time.monotonic() + 60  # a hang guard
    while (status := _post(f"{stack.gateway}/mcp", new).status_code) == 401 and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    assert status != 401, "the token signed by the new key is still refused"
    assert await _tools(f"{stack.gateway}/mcp", new) == {"up__echo"}


def _header_kid(token: str) -> str:
    import base64

    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


# --- attacks found by review (each test is named after one) -------------------------------------


def test_a_token_for_another_personas_url_is_refused(stack: Stack) -> None:
    """A token issued for `/personas/reader/mcp` is no token for `/personas/dev/mcp`, nor for `/mcp`."""
    both = "dev reader"
    for_reader = stack.mint(aud=f"{stack.gateway}/personas/reader/mcp", mcpgw_persona=both)
    for path in ("/personas/dev/mcp", "/mcp"):
        response = _post(f"{stack.gateway}{path}", for_reader)
        assert response.status_code == 401, (path, response.text)
        challenge = response.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge
        assert f'resource_metadata="{stack.gateway}/.well-known/oauth-protected-resource{path}"' in challenge
    assert _initialize_at(stack, "/personas/reader/mcp", for_reader).status_code == 200
    # The gateway's own resources count on every endpoint, as does a list naming this one.
    for audience in (f"{stack.gateway}/mcp", stack.gateway, [f"{stack.gateway}/personas/dev/mcp", "x"]):
        token = stack.mint(aud=audience, mcpgw_persona=both)
        assert _initialize_at(stack, "/personas/dev/mcp", token).status_code == 200, audience
    rows = audit_rows(
        stack,
        "SELECT persona, outcome, error FROM events WHERE kind = 'auth' AND error LIKE '%another endpoint%'",
    )
    assert ("dev", "denied") in {row[:2] for row in rows}, rows
    assert [c for c in stack.upstream_calls() if c["arguments"].get("message") == "should never arrive"] == []


def test_an_explicit_audience_counts_on_every_endpoint_and_nothing_else_does() -> None:
    from mcpgw.server import auth

    base = {"issuer": "https://a", "jwks_url": "https://a/jwks", "public_url": "https://gw/"}
    default = config.AuthSettings(**base)
    assert auth.endpoint_audiences(default, None) == {"https://gw", "https://gw/mcp"}
    assert auth.endpoint_audiences(default, "a") == {
        "https://gw",
        "https://gw/mcp",
        "https://gw/personas/a/mcp",
    }
    explicit = config.AuthSettings(**base, audience=["api://mcpgw"])
    assert (
        auth.endpoint_audiences(explicit, "a") == auth.endpoint_audiences(explicit, None) == {"api://mcpgw"}
    )


def _initialize_at(stack: Stack, path: str, token: str) -> httpx.Response:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    return httpx.post(f"{stack.gateway}{path}", json=INITIALIZE, headers=headers, verify=TLS)


async def test_a_key_removed_from_the_jwks_stops_working_within_the_cache_lifetime() -> None:
    """An issuer of its own (rotating twice drops the first key from its JWKS) and a short cache."""
    from mcpgw.server import auth

    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with background([sys.executable, str(ISSUER), str(port)], port=port):
        settings = config.AuthSettings(
            issuer=issuer,
            jwks_url=f"{issuer}/jwks",
            public_url="http://gw",
            jwks_cache_seconds=1.0,
            jwks_min_refresh_seconds=0.2,
        )
        verifier = auth.JWTVerifier(settings)
        now = int(time.time())
        claims = {"iss": issuer, "sub": "a", "aud": "http://gw/mcp", "iat": now, "exp": now + 300}
        old = httpx.post(f"{issuer}/mint", json={"claims": claims}).json()["token"]
        await verifier.check(old)
        for _ in range(2):
            httpx.post(f"{issuer}/rotate").raise_for_status()
        removed = time.monotonic()
        with anyio.fail_after(10):
            while True:
                try:
                    await verifier.check(old)
                except auth.TokenRejected as exc:
                    assert "unknown key id" in str(exc)
                    break
                await anyio.sleep(0.05)
        bound = settings.jwks_cache_seconds + settings.jwks_min_refresh_seconds
        assert time.monotonic() - removed <= bound + 1.0
        fetches = httpx.get(f"{issuer}/stats").json()["jwks_fetches"]
        assert fetches <= 2 + (time.monotonic() - removed) / settings.jwks_min_refresh_seconds


async def test_a_shorter_max_age_from_the_jwks_server_wins_over_the_cache_setting() -> None:
    import httpx2
    from joserfc.jwk import ECKey

    from mcpgw.server import tokens

    keys = [ECKey.generate_key("P-256", parameters={"kid": f"k{i}"}) for i in range(2)]

    def jwks(request: httpx2.Request) -> httpx2.Response:
        body = {"keys": [key.as_dict(private=False) for key in keys]}
        return httpx2.Response(200, json=body, headers={"Cache-Control": "public, max-age=1"})

    cache = tokens.JWKSCache(
        "https://issuer/jwks", cache_seconds=3600, min_refresh=0.1, transport=httpx2.MockTransport(jwks)
    )
    assert (await cache.key("k0")).kid == "k0"
    assert cache.lifetime == 1
    keys.pop(0)
    removed = time.monotonic()
    with anyio.fail_after(10):
        while True:
            try:
                await cache.key("k0")
            except tokens.TokenRejected:
                break
            await anyio.sleep(0.05)
    assert time.monotonic() - removed <= 1 + 1.0
    assert (await cache.key("k1")).kid == "k1"
    assert tokens.max_age("no-store") == 0 and tokens.max_age("max-age=x, max-age=5") == 5
    assert tokens.max_age(None) is None and tokens.max_age("private") is None


async def test_a_cache_shorter_than_the_refetch_floor_keeps_valid_tokens_working() -> None:
    """Past its lifetime but too soon to refetch, the key set is still used (not every token refused)."""
    import httpx2
    from joserfc.jwk import ECKey

    from mcpgw.server import tokens

    key = ECKey.generate_key("P-256", parameters={"kid": "k0"})
    fetches: list[float] = []

    def jwks(request: httpx2.Request) -> httpx2.Response:
        fetches.append(time.monotonic())
        return httpx2.Response(200, json={"keys": [key.as_dict(private=False)]})

    cache = tokens.JWKSCache(
        "https://issuer/jwks", cache_seconds=0.2, min_refresh=60, transport=httpx2.MockTransport(jwks)
    )
    assert (await cache.key("k0")).kid == "k0"
    with anyio.fail_after(10):
        while time.monotonic() - fetches[0] <= cache.lifetime:
            await anyio.sleep(0.05)
    assert (await cache.key("k0")).kid == "k0"
    assert len(fetches) == 1


def test_escape_sequences_in_the_persona_path_never_reach_the_database_or_the_terminal(stack: Stack) -> None:
    from click.testing import CliRunner

    from mcpgw.cli import cli

    attack = "%1b%5b2J%1b%5d0%3bpwned%07%c2%9b31m%e2%80%ae"  # clear screen, set title, CSI, RLO
    response = _post(f"{stack.gateway}/personas/{attack}/mcp", None)
    assert response.status_code == 401
    rows = audit_rows(
        stack, "SELECT persona, method FROM events WHERE kind = 'auth' AND persona LIKE '%pwned%'"
    )
    assert rows, "the refusal was not recorded"
    persona, method = rows[-1]
    assert persona == "\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202e", persona
    assert persona in method
    with sqlite3.connect(stack.audit) as db:
        for row in db.execute("SELECT * FROM events"):
            text = "".join(value for value in row if isinstance(value, str))
            assert not any(ch in text for ch in "\x1b\x07\x9b\u202e"), text
    runner = CliRunner()
    logs = ["logs", "-c", str(stack.audit.parent / "servers.toml"), "--persona", persona]
    env = {"MCPGW_AUDIT_DB": str(stack.audit)}
    for extra in ([], ["--json"]):
        result = runner.invoke(cli, [*logs, *extra], env=env)
        assert result.exit_code == 0, result.output
        assert not any(ch in result.stdout for ch in "\x1b\x07\x9b\u202e"), result.stdout
    assert json.loads(result.stdout)["persona"] == persona


class _Served:
    """What an MCP endpoint is to the guard in memory: anything that answers."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.responses import PlainTextResponse

        await PlainTextResponse("served")(scope, receive, send)


def _guarded(audit: Any, *, fold_clock: Callable[[], float] | None = None) -> Any:
    """An app with `/mcp` and `/personas/{persona}/mcp` behind `[auth]`, in memory (no issuer needed:
    the refusals sent to it are decided before any key is fetched). `fold_clock`: the refusal
    folds' clock, for a test whose refusals must fall in one fold interval however slow the machine."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from mcpgw.server import auth

    registry = config.Registry.model_validate(
        {
            "personas": {"a": {}, "b": {}},
            "auth": {
                "issuer": "https://issuer.invalid",
                "jwks_url": "https://issuer.invalid/jwks",
                "public_url": "https://gw.example",
                "persona_claim": "p",
            },
        }
    )
    persona_path = "/personas/{persona}/mcp"
    app = Starlette(routes=[Route("/mcp", endpoint=_Served()), Route(persona_path, endpoint=_Served())])
    auth.install(app, registry, mcp_path="/mcp", persona_path=persona_path, audit=audit)
    if fold_clock is not None:
        folds = Folds(clock=fold_clock)
        for route in app.router.routes:
            if isinstance(getattr(route, "app", None), auth.Guard):
                route.app.folds = folds
    return app


def _forged_alg(alg: str) -> str:
    import base64

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'kid': 'k'})}.{part({'sub': 'x'})}.c2ln"


@pytest.mark.long
async def test_a_burst_of_refused_requests_cannot_fill_the_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 refusals varying what a client controls (token, unknown persona, IPv6 address in its
    /64): a bounded number of rows and log lines, whose counts add up to 1,000."""
    from mcpgw.audit import AuditLog

    caplog.set_level("INFO", logger="mcpgw.auth")
    log = AuditLog(tmp_path / "audit.db").start()
    # One fold interval (10 s) for the whole burst, however long a loaded machine takes to send it.
    app = _guarded(log, fold_clock=lambda: 0.0)
    peers = ["203.0.113.1", "203.0.113.2", "198.51.100.7", "2001:db8::{:x}"]  # the last: one /64

    async def refused(peer: str, path: str, headers: dict[str, str]) -> None:
        transport = httpx.ASGITransport(app=app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as http:
            response = await http.post(path, headers=headers)
        assert response.status_code == 401, response.text

    try:
        for i in range(1000):
            tokens = [None, f"garbage-{i}", _forged_alg(f"X{i}")]
            token = tokens[(i // 3) % 3]
            await refused(
                peers[i % len(peers)].format(i),
                ("/mcp", "/personas/a/mcp", f"/personas/nobody-{i}/mcp")[i % 3],
                {"Authorization": f"Bearer {token}"} if token else {},
            )
    finally:
        log.close()
    with sqlite3.connect(tmp_path / "audit.db") as db:
        rows = db.execute("SELECT json_extract(result, '$.count') FROM events WHERE kind = 'auth'").fetchall()
    kinds, endpoints = 3, 3  # no token, not a JWT, an unregistered algorithm; /mcp, a, an unknown persona
    assert len(rows) <= kinds * endpoints * len(peers), len(rows)
    assert sum(count for (count,) in rows) == 1000
    refused = [r for r in caplog.records if r.name == "mcpgw.auth" and r.getMessage().startswith("refused")]
    assert len(refused) == len(rows)


async def test_a_refusal_is_on_disk_before_it_is_answered(tmp_path: Path) -> None:
    from mcpgw.audit import AuditLog

    log = AuditLog(tmp_path / "audit.db").start()
    transport = httpx.ASGITransport(app=_guarded(log))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as http:
            for i, path in enumerate(("/mcp", "/personas/a/mcp", "/personas/b/mcp")):
                assert (await http.post(path)).status_code == 401
                with sqlite3.connect(tmp_path / "audit.db") as db:  # at once: no waiting for the writer
                    found = db.execute("SELECT count(*) FROM events WHERE kind = 'auth'").fetchone()[0]
                assert found == i + 1, path
    finally:
        log.close()


def test_kill_9_loses_no_answered_refusal(tmp_path: Path) -> None:
    """A real gateway killed with SIGKILL right after its last answer: every refusal is a row."""
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    personas = {f"p{i}": {} for i in range(20)}
    registry = _registry(
        tmp_path / "servers.toml",
        {
            "personas": personas,
            "auth": {
                "issuer": "http://127.0.0.1:9",
                "jwks_url": "http://127.0.0.1:9/jwks",
                "public_url": gateway,
            },
        },
    )
    audit = tmp_path / "audit.db"
    with background(_serve(registry, port), port=port, env={"MCPGW_AUDIT_DB": str(audit)}) as process:
        _wait_ready(gateway)
        for name in personas:  # one endpoint each: no two fold into one row
            assert _post(f"{gateway}/personas/{name}/mcp", None).status_code == 401
        process.kill()
        process.wait(10)
    with sqlite3.connect(audit) as db:
        found = {row[0] for row in db.execute("SELECT persona FROM events WHERE kind = 'auth'")}
    assert found == set(personas)


# --- upstream credentials ----------------------------------------------------------------------


async def test_upstream_gets_a_fresh_client_credentials_token_and_a_new_one_before_expiry(
    stack: Stack,
) -> None:
    caller = stack.mint(mcpgw_persona="dev")
    async with Client(f"{stack.gateway}/mcp", auth=caller) as client:
        await client.call_tool("up__echo", {"message": "first"})
        issued = stack.stats()["tokens_issued"]
        await anyio.sleep(TOKEN_TTL - REFRESH_BEFORE + 0.5)
        await client.call_tool("up__echo", {"message": "second"})
    by_message = {c["arguments"].get("message"): c["token"] for c in stack.upstream_calls()}
    assert by_message["first"] and by_message["second"]
    assert by_message["first"] != by_message["second"]
    assert stack.stats()["tokens_issued"] > issued


def test_wrong_client_secret_fails_the_upstream_with_the_token_endpoints_answer(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    registry = _registry(
        tmp_path / "servers.toml",
        {
            "servers": {
                "up": {
                    "url": stack.upstream,
                    "restart": False,
                    "oauth": {
                        "token_url": f"{stack.issuer}/token",
                        "client_id": "mcpgw",
                        "client_secret": "wrong",
                    },
                }
            }
        },
    )
    refusals = stack.stats()["token_refusals"]
    with background(_serve(registry, port), port=port):
        health = _wait_ready(f"http://127.0.0.1:{port}")
    up = health["upstreams"]["up"]
    assert up["state"] == "failed"
    assert f"OAuth token request to {stack.issuer}/token failed" in up["error"]
    assert "invalid_client" in up["error"]
    assert stack.stats()["token_refusals"] > refusals


def test_secrets_file_problems_stop_serve_with_a_clear_message(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "servers.toml", {"gateway": {"secrets_file": str(tmp_path / "none.env")}})
    result = subprocess.run(_serve(registry, free_port()), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "gateway.secrets_file" in result.stderr
    assert "none.env" in result.stderr
    loose = tmp_path / "loose.env"
    loose.write_text("A=b\n")
    loose.chmod(0o644)
    registry = _registry(
        tmp_path / "servers.toml", {"gateway": {"secrets_file": str(loose), "mode": "production"}}
    )
    result = subprocess.run(_serve(registry, free_port()), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "readable by other users" in result.stderr


# --- modes -------------------------------------------------------------------------------------


def test_production_refuses_public_host_without_auth_and_wildcard_cors(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "servers.toml", {"gateway": {"mode": "production"}})
    result = subprocess.run(
        _serve(registry, free_port(), "--host", "0.0.0.0"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "mode is production, refusing to serve" in result.stderr
    assert "listening on 0.0.0.0 without [auth]" in result.stderr
    assert "lock file" not in result.stderr  # refused first: nothing else was loaded or logged
    registry = _registry(
        tmp_path / "servers.toml", {"gateway": {"mode": "production", "cors_origins": ["*"]}}
    )
    result = subprocess.run(_serve(registry, free_port()), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cors_origins allows '*'" in result.stderr


# --- configuration -----------------------------------------------------------------------------

AUTH = 'issuer = "https://login.example.com"\njwks_url = "https://login.example.com/jwks"\n'
AUTH += 'public_url = "https://gw.example.com"\n'


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ('algorithms = ["none"]', "auth.algorithms", "'none' is never accepted"),
        ('algorithms = ["RS256", "HS256"]', "auth.algorithms", "shared-secret algorithm"),
        ('algorithms = ["XX1"]', "auth.algorithms", "unknown algorithm"),
        ('persona_map = { staff = "nobody" }', None, "'nobody', which is not a persona"),
        ('jwks_url = "ftp://x"', None, "jwks_url"),
        ("clock_skew = 9000", "auth.clock_skew", "less than or equal to 300"),
        ("colour = 1", "auth.colour", "unknown key"),
    ],
)
def test_bad_auth_config_names_the_key(extra: str, key: str | None, reason: str) -> None:
    text = (
        AUTH + extra
        if "jwks_url" not in extra
        else AUTH.replace('jwks_url = "https://login.example.com/jwks"', extra)
    )
    with pytest.raises(ConfigError) as caught:
        config.parse("[auth]\n" + text, source="servers.toml")
    assert reason in str(caught.value)
    if key is not None:
        assert caught.value.key == key


def test_oauth_belongs_to_url_servers() -> None:
    text = '[servers.x]\ncommand = "x"\n[servers.x.oauth]\ntoken_url = "https://a/t"\nclient_id = "a"\n'
    text += 'client_secret = "b"\n'
    with pytest.raises(ConfigError) as caught:
        config.parse(text, source="servers.toml")
    assert "'oauth' applies to URL servers" in str(caught.value)


def test_environment_wins_over_the_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcpgw.upstream import credentials

    secrets = tmp_path / "s.env"
    secrets.write_text("TOKEN=from-file\nOTHER=file-only\n")
    secrets.chmod(0o600)
    monkeypatch.setenv("TOKEN", "from-env")
    values = credentials.load_secrets(config.GatewaySettings(secrets_file=str(secrets)))
    env = credentials.environ(values)
    assert config.expand("${TOKEN}/${OTHER}", key="k", environ=env) == "from-env/file-only"
    assert os.environ["TOKEN"] == "from-env"


async def test_upstream_401_gets_one_retry_with_a_new_token(stack: Stack) -> None:
    """Run last: two rotations drop the key of every token issued so far from the issuer's JWKS."""
    import httpx2

    from mcpgw.upstream import credentials

    oauth = config.UpstreamOAuth(
        token_url=f"{stack.issuer}/token", client_id="mcpgw", client_secret="s3cret", resource=stack.upstream
    )
    tokens = credentials.ClientCredentials("up", oauth, {})
    try:
        async with httpx2.AsyncClient(auth=tokens) as http:
            assert (await http.post(stack.upstream, json=INITIALIZE, headers=MCP_HEADERS)).status_code == 200
            assert tokens.fetched == 1
            for _ in range(2):
                httpx.post(f"{stack.issuer}/rotate").raise_for_status()
            # A token by the newest key makes the upstream refetch the JWKS, which has lost the first key.
            fresh = httpx.post(
                f"{stack.issuer}/token",
                data={"grant_type": "client_credentials", "resource": stack.upstream},
                auth=("mcpgw", "s3cret"),
            ).json()["access_token"]
            direct = httpx.post(
                stack.upstream, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {fresh}"}
            )
            assert direct.status_code == 200
            # The cached token is still fresh by its clock, but the upstream no longer knows its key.
            assert (await http.post(stack.upstream, json=INITIALIZE, headers=MCP_HEADERS)).status_code == 200
            assert tokens.fetched == 2
        # The gateway's own session recovers the same way.
        async with Client(f"{stack.gateway}/mcp", auth=stack.mint(mcpgw_persona="dev")) as client:
            result = await client.call_tool("up__echo", {"message": "after two rotations"})
        assert result.content[0].text == "after two rotations"  # type: ignore[union-attr]
    finally:
        await tokens.aclose()
