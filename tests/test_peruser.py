"""Per-user upstream logins over HTTP with `[auth]`: each caller logs in to the upstream for itself.

Real parts on loopback: the Authlib authorization server and the protected MCP server of
`servers/oauth_login.py` (whose `whoami` answers the user who approved the token's login), the
gateway's own issuer (`servers/issuer.py`, minting the callers' tokens), and `mcpgw serve -t http`
with `[servers.s.login] per_user = true`. The browser is the one stand-in: it follows the login
link over HTTP as the user it names (`X-Test-User`), and lands on the gateway's callback.
"""

from __future__ import annotations

import json
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import tomlkit

from conftest import INITIALIZE, SERVERS, TLS, background, free_port, mcpgw_command
from mcpgw.config import load
from mcpgw.config.servers import StdioServer
from mcpgw.upstream import login, userlogin

AS_SERVER, ISSUER = SERVERS / "oauth_login.py", SERVERS / "issuer.py"
IDLE = 2.0
"""`[gateway] session_idle_timeout` of the test gateway: a per-user session idle this long is closed."""
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Stack:
    base: str
    """The authorization server and the protected upstream."""
    issuer: str
    gateway: str
    tokens: Path

    def mint(self, sub: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": sub, "client_id": "cli", "aud": f"{self.gateway}/mcp"}
        minted = httpx.post(
            f"{self.issuer}/mint", json={"claims": {**claims, "iat": now, "exp": now + 600}}, verify=TLS
        )
        minted.raise_for_status()
        return str(minted.json()["token"])

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base}/admin/stats", verify=TLS).json())


def browse(url: str, user: str) -> httpx.Response:
    """The user's browser: approves at the authorization server, lands on the gateway's callback."""
    return httpx.get(url, headers={"X-Test-User": user}, follow_redirects=True, timeout=60, verify=TLS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("peruser")
    as_port, issuer_port, gateway_port = free_port(), free_port(), free_port()
    base, issuer = f"http://127.0.0.1:{as_port}", f"http://127.0.0.1:{issuer_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    registry = tmp / "servers.toml"
    document = {
        "gateway": {"tokens_dir": str(tmp / "tokens"), "startup_timeout": 60, "session_idle_timeout": IDLE},
        "servers": {
            "s": {"url": f"{base}/mcp", "login": {"per_user": True}},
            "sc": {"url": f"{base}/scoped/mcp", "login": {"per_user": True}},
        },
        "auth": {"issuer": issuer, "jwks_url": f"{issuer}/jwks", "public_url": gateway},
    }
    registry.write_text(tomlkit.dumps(document))
    with (
        background([sys.executable, "-W", "ignore", str(AS_SERVER), str(as_port)], port=as_port),
        background([sys.executable, str(ISSUER), str(issuer_port)], port=issuer_port),
    ):
        # The operator's own login: it lists the server's tools for the catalog, and serves no call.
        config = load(registry)[0]

        async def operator(url: str) -> None:
            await anyio.to_thread.run_sync(browse, url, "operator")

        for name, path in (("s", "/mcp"), ("sc", "/scoped/mcp")):
            server = config.servers[name]
            assert not isinstance(server, StdioServer)
            anyio.run(
                partial(login.login, name, server, base + path, None, config.gateway, {}, open_url=operator)
            )
        command = mcpgw_command("serve", "--config", str(registry), "-t", "http", "--port", str(gateway_port))
        with background([*command, "--log-level", "warning"], port=gateway_port):
            deadline = time.monotonic() + 60
            while (
                httpx.get(f"{gateway}/healthz", verify=TLS).status_code != 200 and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            yield Stack(base, issuer, gateway, tmp / "tokens")


def rpc(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a POST's answer (JSON, or the one event of an SSE stream)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(data[-1]))
    return dict(response.json())


def call_whoami(
    stack: Stack, token: str, *, capabilities: dict[str, Any] | None = None, server: str = "s"
) -> dict[str, Any]:
    """A handshake-era session of the caller `token`: `initialize`, then `tools/call s__whoami`."""
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    hello = json.loads(json.dumps(INITIALIZE))
    hello["params"]["capabilities"] = capabilities or {}
    opened = httpx.post(f"{stack.gateway}/mcp", json=hello, headers=headers)
    assert opened.status_code == 200, opened.text
    headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
    headers["MCP-Protocol-Version"] = "2025-11-25"
    httpx.post(
        f"{stack.gateway}/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=headers,
    )
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": f"{server}__whoami", "arguments": {}},
    }
    return rpc(httpx.post(f"{stack.gateway}/mcp", json=call, headers=headers, timeout=60, verify=TLS))


def answer(reply: dict[str, Any]) -> str:
    assert "result" in reply, reply
    return str(reply["result"]["content"][0]["text"])


def login_link(reply: dict[str, Any]) -> str:
    error = reply.get("error")
    assert error is not None and "log in to it first" in error["message"], reply
    link = str(error["message"]).split("open ", 1)[1].split(" and approve", 1)[0]
    assert "/as/authorize?" in link, link
    return link


def test_each_caller_logs_in_once_and_calls_go_up_with_its_own_token(stack: Stack) -> None:
    alice, bob = stack.mint("alice"), stack.mint("bob")
    # Nobody has logged in yet: the call fails with the caller's own login link, nothing goes up
    # with the operator's login.
    first = login_link(call_whoami(stack, alice))
    assert httpx.URL(first).params["redirect_uri"] == f"{stack.gateway}/oauth/callback"
    landed = browse(first, "alice-upstream")
    assert landed.status_code == 200 and "Logged in to s" in landed.text, landed.text
    assert answer(call_whoami(stack, alice)) == "alice-upstream"
    # Bob is not Alice: his own link, his own login, his own token upstream.
    second = login_link(call_whoami(stack, bob))
    assert httpx.URL(second).params["state"] != httpx.URL(first).params["state"]
    assert browse(second, "bob-upstream").status_code == 200
    assert answer(call_whoami(stack, bob)) == "bob-upstream"
    assert answer(call_whoami(stack, alice)) == "alice-upstream"
    # Each principal's tokens in a file of its own, owner-only; no caller's gateway token anywhere in them.
    files = sorted((stack.tokens / "users").glob("*/s.json"))
    assert len(files) == 2
    # No caller's own token to the gateway ever went upstream (no passthrough).
    seen = [bearer for bearers in stack.stats()["seen"].values() for bearer in bearers]
    assert seen and not any(alice in bearer or bob in bearer for bearer in seen)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        text = path.read_text()
        assert alice not in text and bob not in text and "access_token" in text


def test_a_login_link_is_single_use_and_an_unknown_one_is_refused(stack: Stack) -> None:
    carol = stack.mint("carol")
    link = login_link(call_whoami(stack, carol))
    # The same caller asking again before approving gets the same login, not a second one.
    assert login_link(call_whoami(stack, carol)) == link
    unknown = httpx.get(f"{stack.gateway}/oauth/callback", params={"code": "x", "state": "forged"})
    assert unknown.status_code == 400 and "unknown, used or expired" in unknown.text
    assert unknown.headers["cache-control"] == "no-store"
    # The user says no at the authorization server: the login ends, the next call gets a new link.
    state = httpx.URL(link).params["state"]
    refused = httpx.get(f"{stack.gateway}/oauth/callback", params={"error": "access_denied", "state": state})
    assert (
        refused.status_code == 400 and "Login to s failed" in refused.text and "access_denied" in refused.text
    )
    again = login_link(call_whoami(stack, carol))
    assert httpx.URL(again).params["state"] != state
    # A used state is spent: the browser's redirect replayed finds nothing.
    assert browse(again, "carol-upstream").status_code == 200
    replayed = httpx.get(
        f"{stack.gateway}/oauth/callback", params={"code": "x", "state": httpx.URL(again).params["state"]}
    )
    assert replayed.status_code == 400
    assert answer(call_whoami(stack, carol)) == "carol-upstream"


def test_a_client_taking_url_elicitations_gets_the_link_as_one(stack: Stack) -> None:
    reply = call_whoami(stack, stack.mint("dave"), capabilities={"elicitation": {"form": {}, "url": {}}})
    error = reply["error"]
    assert error["code"] == -32042, reply
    [elicitation] = error["data"]["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["elicitationId"]
    assert "/as/authorize?" in elicitation["url"] and "Log in to s" in elicitation["message"]


def test_a_revoked_login_gets_a_new_link_and_refresh_keeps_a_login(stack: Stack) -> None:
    erin = stack.mint("erin")
    assert browse(login_link(call_whoami(stack, erin)), "erin-upstream").status_code == 200
    assert answer(call_whoami(stack, erin)) == "erin-upstream"
    # The issuer ends every access token early: each session refreshes its own, no new login.
    before = stack.stats()
    httpx.post(f"{stack.base}/admin/expire")
    assert answer(call_whoami(stack, erin)) == "erin-upstream"
    after = stack.stats()
    assert after.get("grant_refresh_token", 0) > before.get("grant_refresh_token", 0)
    assert after.get("authorizations") == before.get("authorizations")
    # Revoked at the issuer (refresh token too): the next call is a login link again, for erin only.
    path = userlogin.folder(stack.tokens, "sub=erin client_id=cli") / "s.json"
    record = json.loads(path.read_text())
    for kind in ("refresh_token", "access_token"):
        httpx.post(
            f"{stack.base}/as/revoke",
            data={"token": record["tokens"][kind], "client_id": record["client"]["client_id"]},
        )
    httpx.post(f"{stack.base}/admin/expire")
    login_link(call_whoami(stack, erin))


def test_a_caller_short_of_scope_logs_in_again_for_more(stack: Stack) -> None:
    frank = stack.mint("frank")
    assert browse(login_link(call_whoami(stack, frank, server="sc")), "frank-upstream").status_code == 200
    assert answer(call_whoami(stack, frank, server="sc")) == "frank-upstream"
    httpx.post(f"{stack.base}/admin/want-admin")  # from now on the server wants scope `admin` too
    link = login_link(call_whoami(stack, frank, server="sc"))
    # The new login asks for what was granted and what the server challenged with (SEP-2350).
    assert set(httpx.URL(link).params["scope"].split()) == {"mcp", "admin"}
    assert browse(link, "frank-upstream").status_code == 200
    assert answer(call_whoami(stack, frank, server="sc")) == "frank-upstream"


def test_per_user_needs_auth_and_the_servers_own_login() -> None:
    from mcpgw.config import validate
    from mcpgw.errors import ConfigError

    auth = {
        "issuer": "https://as.example",
        "jwks_url": "https://as.example/jwks",
        "public_url": "https://gw.example",
    }
    server = {"url": "https://up.example/mcp", "login": {"per_user": True}}
    with pytest.raises(ConfigError, match=r"servers.up.login.per_user needs \[auth\]"):
        validate({"servers": {"up": server}}, source="test")
    keyed = {**server, "headers": {"Authorization": "Bearer x"}}
    with pytest.raises(ConfigError, match="which every caller would share"):
        validate({"servers": {"up": keyed}, "auth": auth}, source="test")
    validate({"servers": {"up": server}, "auth": auth}, source="test")


def test_an_idle_callers_session_is_closed_and_reopened_on_its_next_call(stack: Stack) -> None:
    gina, hank = stack.mint("gina"), stack.mint("hank")
    for token, user in ((gina, "gina-upstream"), (hank, "hank-upstream")):
        assert browse(login_link(call_whoami(stack, token)), user).status_code == 200
        assert answer(call_whoami(stack, token)) == user
    assert httpx.get(f"{stack.gateway}/healthz").json()["per_user_sessions"] >= 2
    time.sleep(IDLE + 0.5)  # the idle timeout itself is what is tested: every session goes idle
    # Gina's next call closes every session idle past the timeout (Hank's) and opens her own again.
    assert answer(call_whoami(stack, gina)) == "gina-upstream"
    assert httpx.get(f"{stack.gateway}/healthz").json()["per_user_sessions"] == 1
    assert answer(call_whoami(stack, hank)) == "hank-upstream"  # no new login: its tokens are kept
