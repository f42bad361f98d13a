"""`mcpgw login` / `logout` against a real OAuth authorization server and the MCP servers it protects.

`servers/oauth_login.py` (one process for the module) is an Authlib authorization server with
discovery, dynamic registration, the code flow with PKCE, refresh and revocation, and two MCP
servers that each take only live tokens issued for their own URL. The browser is the one
stand-in: `webbrowser.open` follows the authorization URL over HTTP, as a user approving would,
and the redirect lands on mcpgw's loopback receiver.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from click.testing import CliRunner
from mcp.shared.exceptions import MCPError

from conftest import SERVERS, TLS, background, free_port
from mcpgw.cli import cli
from mcpgw.config import load
from parity import gateway_client, served

AS_SERVER = SERVERS / "oauth_login.py"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    port = free_port()
    with background([sys.executable, "-W", "ignore", str(AS_SERVER), str(port)], port=port):
        yield f"http://127.0.0.1:{port}"


def stats(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/admin/stats", verify=TLS).json())


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The user's browser: follows the authorization URL, the server approves, the redirect lands on mcpgw."""
    opened: list[str] = []

    def open_(url: str) -> bool:
        opened.append(url)
        landed = httpx.get(url, follow_redirects=True, timeout=30, verify=TLS)
        assert landed.status_code == 200, landed.text
        return True

    monkeypatch.setattr("webbrowser.open", open_)
    return opened


@pytest.fixture
def registry(tmp_path: Path, base: str) -> Path:
    path = tmp_path / "servers.toml"
    path.write_text(
        f'[gateway]\ntokens_dir = "{tmp_path}/tokens"\nstartup_timeout = 60\n'
        f'[audit]\npath = "{tmp_path}/audit.db"\n'
        f'[servers.s]\nurl = "{base}/mcp"\nrestart = false\n'
        f'[servers.o]\nurl = "{base}/other/mcp"\nrestart = false\nenabled = false\n'
    )
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def token_file(registry: Path, server: str = "s") -> Path:
    return registry.parent / "tokens" / f"{server}.json"


async def call_whoami(registry: Path, server: str = "s") -> str:
    """What the protected server's `whoami` answers through the gateway (audited, as served)."""
    async with served(load(registry)[0], {}, registry_path=registry) as gateway:
        upstream = gateway.upstreams[server]
        assert upstream.state == "ready", upstream.error
        async with gateway_client(gateway) as client:
            result = await client.call_tool(f"{server}__whoami", {})
            return str(result.content[0].text)  # type: ignore[union-attr]


def test_login_discovers_registers_and_runs_the_code_flow(
    registry: Path, base: str, browser: list[str]
) -> None:
    before = stats(base)
    logged = run("login", "--config", str(registry), "s", "--json")
    assert logged.exit_code == 0, logged.output
    assert f"logged in to s ({base}/mcp)" in logged.output
    assert f"issuer {base}/as" in logged.output and "refreshed automatically" in logged.output
    shown = json.loads(logged.stdout)
    assert shown["issuer"] == f"{base}/as" and shown["refreshable"] is True
    # Discovery found the AS through the resource's metadata; mcpgw registered itself, then used PKCE
    # and asked for the resource by its indicator.
    [url] = browser
    assert url.startswith(f"{base}/as/authorize?") and "code_challenge_method=S256" in url
    assert f"resource={httpx.URL(base + '/mcp')}".replace(":", "%3A").replace("/", "%2F") in url
    after = stats(base)
    assert after.get("registrations", 0) == before.get("registrations", 0) + 1
    assert after.get("grant_authorization_code", 0) == before.get("grant_authorization_code", 0) + 1
    # Owner-only, outside the registry.
    path = token_file(registry)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "access_token" not in registry.read_text()
    # The gateway now reaches the protected upstream with the stored tokens.
    assert anyio.run(call_whoami, registry) == "alice"
    checked = run("list-servers", "--config", str(registry), "--check")
    assert checked.exit_code == 0, checked.output


def test_without_a_login_the_check_says_needs_login(registry: Path) -> None:
    checked = run("list-servers", "--config", str(registry), "--check")
    assert checked.exit_code == 3, checked.output
    assert "needs login: run `mcpgw login s`" in checked.output
    assert "401" not in checked.output


def test_an_expired_token_is_refreshed_on_401(registry: Path, base: str, browser: list[str]) -> None:
    assert run("login", "--config", str(registry), "s").exit_code == 0
    first = json.loads(token_file(registry).read_text())["tokens"]
    httpx.post(f"{base}/admin/expire")  # the issuer ends every access token early
    before = stats(base)
    assert anyio.run(call_whoami, registry) == "alice"
    after = stats(base)
    assert after.get("grant_refresh_token", 0) == before.get("grant_refresh_token", 0) + 1
    assert after.get("authorizations") == before.get("authorizations")  # no new login was needed
    second = json.loads(token_file(registry).read_text())["tokens"]
    assert second["access_token"] != first["access_token"]


def test_a_token_near_expiry_is_refreshed_before_it_is_sent(
    registry: Path, base: str, browser: list[str]
) -> None:
    assert run("login", "--config", str(registry), "s").exit_code == 0
    path = token_file(registry)
    record = json.loads(path.read_text())
    record["expires_at"] -= record["tokens"]["expires_in"] - 5  # five seconds left: inside the margin
    path.write_text(json.dumps(record))
    before = stats(base)
    assert anyio.run(call_whoami, registry) == "alice"
    after = stats(base)
    assert after.get("grant_refresh_token", 0) == before.get("grant_refresh_token", 0) + 1
    assert after.get("refused", 0) == before.get("refused", 0)  # refreshed first: nothing was refused


def test_logout_revokes_the_tokens(registry: Path, base: str, browser: list[str]) -> None:
    assert run("login", "--config", str(registry), "s").exit_code == 0
    token = json.loads(token_file(registry).read_text())["tokens"]["access_token"]
    before = stats(base)
    out = run("logout", "--config", str(registry), "s")
    assert out.exit_code == 0 and "logged out of s (tokens revoked and removed)" in out.output
    assert stats(base)["revocations"] >= before.get("revocations", 0) + 2  # refresh and access token
    refused = httpx.post(f"{base}/mcp", headers={"Authorization": f"Bearer {token}"}, json={})
    assert refused.status_code == 401
    assert "needs login" in run("list-servers", "--config", str(registry), "--check").output
    assert "not logged in" in run("logout", "--config", str(registry), "s").output


def test_tokens_go_to_no_other_server_and_a_wrong_audience_is_refused(
    registry: Path, base: str, browser: list[str]
) -> None:
    assert run("login", "--config", str(registry), "s").exit_code == 0
    assert run("enable", "--config", str(registry), "o").exit_code == 0
    sent_before = len(stats(base)["sent_to_other"])
    checked = run("list-servers", "--config", str(registry), "--check")
    assert "needs login: run `mcpgw login o`" in checked.output
    assert len(stats(base)["sent_to_other"]) == sent_before  # s's token never went to o
    # A token for /mcp, filed for /other/mcp by hand: the server refuses it (its audience is
    # another resource), and so does the issuer a refresh for a resource it was not granted.
    record = json.loads(token_file(registry).read_text())
    record["url"] = f"{base}/other/mcp"
    token_file(registry, "o").write_text(json.dumps(record))
    checked = run("list-servers", "--config", str(registry), "--check")
    assert checked.exit_code == 3 and "needs login: run `mcpgw login o`" in checked.output
    sent = stats(base)["sent_to_other"][sent_before:]
    assert sent and set(sent) == {f"Bearer {record['tokens']['access_token']}"}


def test_tokens_are_in_no_log_and_no_audit_row(
    registry: Path, base: str, browser: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logged = run("login", "--config", str(registry), "s")
    assert logged.exit_code == 0
    httpx.post(f"{base}/admin/expire")
    assert anyio.run(call_whoami, registry) == "alice"  # and a refresh on the way
    record = json.loads(token_file(registry).read_text())
    secrets = [record["tokens"]["access_token"], record["tokens"]["refresh_token"]]
    audit = registry.parent / "audit.db"
    with sqlite3.connect(audit) as db:
        dump = "\n".join(db.iterdump())
    assert "whoami" in dump
    for secret in secrets:
        assert secret not in caplog.text and secret not in logged.output and secret not in dump


def test_add_server_offers_the_login(registry: Path, base: str, browser: list[str]) -> None:
    later = run("add-server", "--config", str(registry), "later", "--url", f"{base}/mcp", "--no-login")
    assert later.exit_code == 0, later.output
    assert "it needs a login: run `mcpgw login later`" in later.output and not browser
    now = run("add-server", "--config", str(registry), "now", "--url", f"{base}/mcp", "--login")
    assert now.exit_code == 0, now.output
    assert "logged in to now" in now.output and "checked now: 1 tool" in now.output
    assert "[servers.now]" in registry.read_text() and len(browser) == 1


@pytest.mark.anyio
async def test_a_login_revoked_while_serving_fails_calls_with_needs_login(
    registry: Path, base: str, browser: list[str]
) -> None:
    assert await anyio.to_thread.run_sync(lambda: run("login", "--config", str(registry), "s").exit_code) == 0
    record = json.loads(token_file(registry).read_text())
    async with (
        served(load(registry)[0], {}, registry_path=registry) as gateway,
        gateway_client(gateway) as client,
    ):
        assert (await client.call_tool("s__whoami", {})).content[0].text == "alice"  # type: ignore[union-attr]
        async with httpx.AsyncClient() as http:
            for hint in ("refresh_token", "access_token"):
                revoked = await http.post(
                    f"{base}/as/revoke",
                    data={"token": record["tokens"][hint], "client_id": record["client"]["client_id"]},
                )
                assert revoked.status_code == 200, revoked.text
        with pytest.raises(MCPError) as refused:
            await client.call_tool("s__whoami", {})
        assert str(refused.value) == "upstream 's': needs login: run `mcpgw login s`"


def test_bad_logins_say_what_is_wrong(registry: Path, base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with registry.open("a") as file:
        file.write('[servers.cmd]\ncommand = "true"\nenabled = false\n')
        file.write(f'[servers.keyed]\nurl = "{base}/mcp"\nheaders = {{ Authorization = "Bearer x" }}\n')
        file.write("enabled = false\n")
    cases = {
        "nope": "no server named 'nope' in the registry",
        "cmd": "'cmd' is a command server: only URL servers log in",
        "keyed": "upstream 'keyed': has its own credentials (`oauth` or an Authorization header)",
    }
    for name, message in cases.items():
        refused = run("login", "--config", str(registry), name, "--no-browser")
        assert refused.exit_code in (2, 3) and message in refused.output, refused.output
    # The user says no at the authorization server: the redirect carries the error, nothing is stored.

    def deny(url: str) -> bool:
        query = httpx.URL(url).params
        denied = httpx.get(
            query["redirect_uri"],
            params={
                "error": "access_denied",
                "error_description": "the user said no",
                "state": query["state"],
            },
        )
        assert denied.status_code == 400 and "the user said no" in denied.text
        return True

    def follow(url: str) -> bool:
        return httpx.get(url, follow_redirects=True).status_code == 200

    monkeypatch.setattr("webbrowser.open", follow)
    assert run("login", "--config", str(registry), "s").exit_code == 0
    before = token_file(registry).read_text()
    monkeypatch.setattr("webbrowser.open", deny)
    refused = run("login", "--config", str(registry), "s")
    assert refused.exit_code == 3
    assert "upstream 's': login refused by the authorization server: the user said no" in refused.output
    assert token_file(registry).read_text() == before  # the earlier login is kept
    # A damaged login file is named, with what to do, and left for the user to look at.
    token_file(registry).write_text("{not json")
    damaged = run("list-servers", "--config", str(registry), "--check", "--json")
    row = next(r for r in json.loads(damaged.stdout)["servers"] if r["name"] == "s")
    assert damaged.exit_code == 3 and row["error"].endswith("delete it and run `mcpgw login s`"), row
    assert token_file(registry).read_text() == "{not json"


def test_client_credentials_discover_the_authorization_server(registry: Path, base: str) -> None:
    issuer = f"{base}/as"
    with registry.open("a") as file:
        for name, secret, named in (
            ("cc", "cc-secret", issuer),
            ("bad", "wrong", issuer),
            ("elsewhere", "x", base),
        ):
            file.write(f'[servers.{name}]\nurl = "{base}/mcp"\nrestart = false\n[servers.{name}.oauth]\n')
            file.write(f'client_id = "cc-client"\nclient_secret = "{secret}"\nissuer = "{named}"\n')
    before = stats(base).get("grant_client_credentials", 0)
    assert anyio.run(call_whoami, registry, "cc") == "alice"
    assert stats(base)["grant_client_credentials"] == before + 2  # cc's, and bad's refused one
    checked = run("list-servers", "--config", str(registry), "--check", "--json")
    errors = {r["name"]: r["error"] for r in json.loads(checked.stdout)["servers"]}
    assert errors["cc"] is None and errors["bad"].startswith(
        "upstream 'bad': OAuth: Token exchange failed (401)"
    ), errors
    # The upstream leads to an authorization server that is not the configured issuer: no secret goes there.
    assert errors["elsewhere"].startswith(
        "upstream 'elsewhere': OAuth: Authorization server metadata issuer mismatch"
    ), errors
    assert stats(base)["grant_client_credentials"] == before + 4


def test_a_server_wanting_more_scope_needs_login_and_login_steps_up(
    registry: Path, base: str, browser: list[str]
) -> None:
    with registry.open("a") as file:
        file.write(f'[servers.scoped]\nurl = "{base}/scoped/mcp"\nrestart = false\n')
    assert run("login", "--config", str(registry), "scoped").exit_code == 0
    assert "scope=mcp" in browser[0]
    httpx.post(f"{base}/admin/want-admin")  # from now on it wants `admin` too
    checked = run("list-servers", "--config", str(registry), "--check", "--json")
    row = next(r for r in json.loads(checked.stdout)["servers"] if r["name"] == "scoped")
    assert (
        row["error"] == "upstream 'scoped': needs login: run `mcpgw login scoped`"
    )  # no browser while serving
    assert len(browser) == 1
    again = run("login", "--config", str(registry), "scoped", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["scope"] == "mcp admin" and "scope=mcp+admin" in browser[-1]
    assert anyio.run(call_whoami, registry, "scoped") == "alice"


def test_login_to_a_server_that_lets_initialize_in_without_one(
    registry: Path, base: str, browser: list[str]
) -> None:
    with registry.open("a") as file:
        file.write(f'[servers.lenient]\nurl = "{base}/lenient/mcp"\nrestart = false\n')
    logged = run("login", "--config", str(registry), "lenient")
    assert logged.exit_code == 0, logged.output
    assert len(browser) == 1 and anyio.run(call_whoami, registry, "lenient") == "alice"


def test_login_to_a_legacy_sse_server(registry: Path, base: str, browser: list[str]) -> None:
    with registry.open("a") as file:
        file.write(f'[servers.legacy]\nurl = "{base}/legacy/sse"\ntransport = "sse"\nrestart = false\n')
    logged = run("login", "--config", str(registry), "legacy")
    assert logged.exit_code == 0, logged.output
    assert anyio.run(call_whoami, registry, "legacy") == "alice"


def test_a_401_without_oauth_is_not_called_a_login(registry: Path, base: str) -> None:
    with registry.open("a") as file:
        file.write(f'[servers.keyed]\nurl = "{base}/keyed/mcp"\nrestart = false\n')
    checked = run("list-servers", "--config", str(registry), "--check", "--json")
    row = next(r for r in json.loads(checked.stdout)["servers"] if r["name"] == "keyed")
    assert row["status"] == "failed" and "login" not in row["error"], row


def test_an_oauth_table_takes_one_credential(tmp_path: Path) -> None:
    from mcpgw.config import validate
    from mcpgw.errors import ConfigError

    def oauth(**fields: Any) -> dict[str, Any]:
        server = {"url": "https://up.example/mcp", "oauth": {"client_id": "c", **fields}}
        return {"servers": {"up": server}}

    for fields, reason in (
        (
            {"client_secret": "s", "private_key": "k"},
            "needs exactly one of `client_secret`, `private_key`",
        ),
        ({}, "needs exactly one of `client_secret`, `private_key`"),
        ({"assertion": "a", "assertion_file": "/f"}, "needs exactly one of"),
        ({"private_key": "k", "token_url": "https://as.example/token"}, "`private_key` works with discovery"),
    ):
        with pytest.raises(ConfigError, match=reason.replace("(", r"\(")):
            validate(oauth(**fields), source="test")
    validate(oauth(private_key="${KEY}", signing_algorithm="ES256"), source="test")
    validate(oauth(assertion_file="/var/run/secrets/tokens/mcp"), source="test")
    enterprise = {"idp_token_url": "https://idp.example/token", "idp_client_id": "c", "id_token": "t"}
    with pytest.raises(ConfigError, match="`enterprise` needs `client_secret` and `issuer`"):
        validate(oauth(client_secret="s", enterprise=enterprise), source="test")
    with pytest.raises(ConfigError, match="needs exactly one of `id_token` and `id_token_file`"):
        validate(
            oauth(
                client_secret="s",
                issuer="https://as.example",
                enterprise={**enterprise, "id_token_file": "/f"},
            ),
            source="test",
        )
    validate(oauth(client_secret="s", issuer="https://as.example", enterprise=enterprise), source="test")


def test_a_missing_workload_token_file_is_named(registry: Path, base: str) -> None:
    with registry.open("a") as file:
        file.write(f'[servers.wif]\nurl = "{base}/mcp"\nrestart = false\n[servers.wif.oauth]\n')
        file.write(f'client_id = "w"\nassertion_file = "{registry.parent}/nope.jwt"\nissuer = "{base}/as"\n')
    checked = run("list-servers", "--config", str(registry), "--check", "--json")
    errors = {r["name"]: r["error"] for r in json.loads(checked.stdout)["servers"]}
    assert (
        errors["wif"]
        == f"upstream 'wif': cannot read assertion_file {registry.parent}/nope.jwt: No such file or directory"
    ), errors


@pytest.mark.anyio
async def test_more_scope_while_serving_is_asked_of_the_client_as_a_link(
    registry: Path, base: str, browser: list[str]
) -> None:
    with registry.open("a") as file:
        file.write(f'[servers.scoped]\nurl = "{base}/scoped/mcp"\nrestart = false\n')
    async with httpx.AsyncClient() as http:
        await http.post(f"{base}/admin/want-admin", json={"on": False})
        assert (
            await anyio.to_thread.run_sync(
                lambda: run("login", "--config", str(registry), "scoped").exit_code
            )
            == 0
        )
        links: list[str] = []

        async def elicit(context: Any, params: Any) -> types.ElicitResult:
            # The user's client shows the link; the user opens it and approves.
            links.append(params.url)
            landed = await http.get(params.url, follow_redirects=True)
            assert landed.status_code == 200 and "Logged in to scoped" in landed.text
            return types.ElicitResult(action="accept")

        async with (
            served(load(registry)[0], {}, registry_path=registry) as gateway,
            gateway_client(gateway, mode="legacy", elicitation_callback=elicit) as client,
        ):
            assert (await client.call_tool("scoped__whoami", {})).content[0].text == "alice"  # type: ignore[union-attr]
            await http.post(f"{base}/admin/want-admin", json={"on": True})
            before = stats(base)
            # The call that met the 403 goes on once the user approved the link it was given.
            assert (await client.call_tool("scoped__whoami", {})).content[0].text == "alice"  # type: ignore[union-attr]
            [link] = links
            assert set(httpx.URL(link).params["scope"].split()) == {"mcp", "admin"}
            assert stats(base)["authorizations"] == before["authorizations"] + 1
        await http.post(f"{base}/admin/want-admin", json={"on": False})
    assert len(browser) == 1  # the gateway itself opened no browser
    assert json.loads(token_file(registry, "scoped").read_text())["tokens"]["scope"] == "mcp admin"
