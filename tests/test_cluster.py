"""Three `mcpgw serve --transport http` replicas on Redis behind nginx: the scale-out acceptance test.

Real parts only: redis-server, nginx and PostgreSQL from Debian (nginx runs the shipped
`deploy/nginx.conf`; PostgreSQL holds the one audit log, `[audit] url`, `durable = "all"`), three
gateway processes sharing budgets, limits, approvals and stream events through `[cluster]`,
stdio upstreams per replica (`tiny.py`, and `modern.py`, which samples), and the stand-in model
(`llm`). One scenario in phases, so the processes start once (and on one xdist worker):

1. sessions: a handshake-era session stays on the replica that opened it; stateless calls spread;
2. limits: a persona's requests per minute hold across replicas, refused with 429 and `Retry-After`;
3. pins: an approval made through one replica is served by every replica (the delay is measured);
4. registry: an edit taken by one replica is served by the others;
5. load: 16 clients, 10,000 calls in both eras, one replica SIGKILLed a third of the way in.
   Every call is answered (a result or a clear error), every answered call has its audit row in
   PostgreSQL (the victim's last answers too), and
   the sampling budget set for the run is never exceeded across replicas.

Clients are raw httpx with keep-alive, speaking MCP as the SDK's client does on the wire (a
dropped handshake-era stream is resumed with `Last-Event-ID`, as the SDK does), so the load is
the gateways' and not the clients' session set-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
import tomlkit

from conftest import (
    INITIALIZE,
    PROCESS_LIMIT,
    SERVERS,
    TLS,
    StandIn,
    background,
    free_port,
    mcpgw_command,
    run_mcpgw,
)
from pg import Postgres
from services import nginx, redis_server

pytestmark = pytest.mark.anyio

REPLICAS = ("mcpgw-1", "mcpgw-2", "mcpgw-3")
"""Named as `deploy/nginx.conf` names them: the test runs that file as it is."""
CLIENTS = 16
CALLS = 10_000
KILL_AT = 3_000
"""Calls answered when the second replica is SIGKILLed."""
SAMPLE_EVERY = 50
"""Every 50th call samples (`modern__summarize`): 200 sampling requests, 16 at a time, against the budget."""
BUDGET = 1_000
"""Tokens per day for the whole run: about 20 of the 200 sampling requests fit."""
KEY_VAR = "MCPGW_TEST_LLM_KEY"
HANDSHAKE = "2025-11-25"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "load", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
CLEAR_ERRORS = (
    "has used its sampling budget for today",  # the budget, once spent
    "Session not found",  # the session's replica is gone: the client starts a new one
    "mcpgw replica failed while answering",  # nginx: the replica died with the call in flight
    CUT_OFF := "the answer was cut off",  # the replica died after its answer's headers went out
)
TINY = {"command": sys.executable, "args": [str(SERVERS / "tiny.py")]}
MODERN = {"command": sys.executable, "args": [str(SERVERS / "modern.py")]}


@dataclass
class Replica:
    name: str
    home: Path
    port: int
    process: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@dataclass
class Cluster:
    replicas: list[Replica]
    url: str
    """nginx's `/mcp`."""
    redis_url: str
    audit_url: str
    """The one audit log of every replica: a schema of its own on the test session's PostgreSQL."""


def registry(redis_url: str, llm: StandIn, *, audit_url: str, late: bool) -> str:
    servers: dict[str, Any] = {"tiny": TINY, "modern": MODERN}
    if late:
        servers["late"] = TINY  # unpinned: withheld (production mode) until `mcpgw pin late`
    route = llm.route("good", key_env=KEY_VAR)
    doc = {
        "gateway": {"mode": "production", "drain_grace": 1},
        "servers": servers,
        "personas": {"limited": {}, "limited2": {}},
        "limits": {"personas": {p: {"requests_per_minute": 5} for p in ("limited", "limited2")}},
        "sampling": {"routes": {"main": route}, "personas": {"default": {"tokens_per_day": BUDGET}}},
        "audit": {"url": audit_url, "durable": "all"},  # one log; no answered call's row lost
        "cluster": {"redis_url": redis_url, "key_prefix": "accept:"},  # replica: $MCPGW_REPLICA
    }
    return tomlkit.dumps(doc)


def healthy(url: str) -> None:
    deadline = time.monotonic() + PROCESS_LIMIT
    while time.monotonic() < deadline:
        try:
            if httpx.get(url.replace("/mcp", "/healthz"), verify=TLS).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become healthy")


@pytest.fixture(scope="module")
def cluster(
    llm: StandIn, postgres_server: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    audit_url = postgres_server.fresh()
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(base))
        # The pins every replica starts with: tiny's and modern's (not late's).
        seed = base / "seed"
        seed.mkdir()
        (seed / "servers.toml").write_text(registry(redis_url, llm, audit_url=audit_url, late=False))
        pinned = run_mcpgw("pin", "--config", str(seed / "servers.toml"))
        assert pinned.returncode == 0, pinned.stderr
        replicas = []
        for name in REPLICAS:
            home = base / name
            home.mkdir()
            (home / "servers.toml").write_text(registry(redis_url, llm, audit_url=audit_url, late=True))
            shutil.copy(seed / "servers.lock", home / "servers.lock")
            port = free_port()
            command = mcpgw_command("serve", "--transport", "http", "--port", str(port))
            command += ["--config", str(home / "servers.toml")]
            env = {KEY_VAR: "sk-test", "MCPGW_REPLICA": name}
            process = stack.enter_context(background(command, port=port, env=env))
            replicas.append(Replica(name, home, port, process))
        for replica in replicas:
            healthy(replica.url)
            assert httpx.get(replica.url.replace("/mcp", "/healthz")).json()["replica"] == replica.name
        port = stack.enter_context(nginx(base / "nginx", {r.name: r.port for r in replicas}))
        yield Cluster(replicas, f"http://127.0.0.1:{port}/mcp", redis_url, audit_url)


# --- an MCP client on raw HTTP ----------------------------------------------------------------------


def _messages(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]


@dataclass
class Client:
    """One MCP client of one era, on one keep-alive connection pool."""

    http: httpx.AsyncClient
    url: str
    era: str
    session: str | None = None
    opened: int = 0
    ids: int = 0

    async def _open(self) -> None:
        response = await self.http.post(self.url, json=INITIALIZE, headers=ACCEPT)
        response.raise_for_status()
        self.session = response.headers["mcp-session-id"]
        self.opened += 1
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self.http.post(self.url, json=note, headers=self._headers("notifications/initialized"))

    def _headers(self, method: str, name: str | None = None) -> dict[str, str]:
        if self.era == "stateless":
            extra = {"Mcp-Name": name} if name else {}
            return {**ACCEPT, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, **extra}
        assert self.session is not None
        return {**ACCEPT, "Mcp-Session-Id": self.session, "MCP-Protocol-Version": HANDSHAKE}

    async def request(self, method: str, params: dict[str, Any], *, url: str | None = None) -> dict[str, Any]:
        """The JSON-RPC answer to one request: its `result`, or its `error` (also one nginx wrote)."""
        if self.era == "handshake" and self.session is None:
            await self._open()
        self.ids += 1
        if self.era == "stateless":
            params = {**params, "_meta": MODERN_META}
        body = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}
        headers = self._headers(method, params.get("name"))
        lines: list[str] = []
        try:
            async with self.http.stream("POST", url or self.url, json=body, headers=headers) as response:
                if response.status_code == 404 and self.era == "handshake":
                    self.session = None  # its replica is gone (or closed it): the next call opens another
                async for line in response.aiter_lines():
                    lines.append(line)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return await self._resume(lines)
        answers = [m for m in _messages(lines) if "result" in m or "error" in m]
        if not answers and lines and lines[0].startswith("{"):
            answers = [json.loads("\n".join(lines))]
        assert answers, f"no answer to {method}: {lines}"
        return answers[-1]

    async def _resume(self, lines: list[str]) -> dict[str, Any]:
        """A stream cut mid-call: reconnect with `Last-Event-ID`, as the SDK's client does."""
        seen = [line[3:].strip() for line in lines if line.startswith("id:")]
        if self.era == "stateless" or not seen:
            # Nothing to resume: the connection closed mid-answer is what the client reports, as an
            # SDK client raises it for that call (nginx cannot retry a POST whose answer began).
            return {"error": {"code": -32000, "message": f"{CUT_OFF}: {len(lines)} lines received"}}
        response = await self.http.get(self.url, headers={**self._headers("GET"), "Last-Event-ID": seen[-1]})
        assert response.status_code == 404, response.text  # the replica holding the session is gone
        self.session = None
        return dict(response.json())

    async def call(self, tool: str, arguments: dict[str, Any], **options: Any) -> tuple[bool, str]:
        """(True, the tool's text) for a result; (False, the message) for an error of any kind."""
        answer = await self.request("tools/call", {"name": tool, "arguments": arguments}, **options)
        if "error" in answer:
            return False, str(answer["error"]["message"])
        text = str(answer["result"]["content"][0]["text"])
        return not answer["result"].get("isError"), text


def pool() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=PROCESS_LIMIT, limits=httpx.Limits(max_keepalive_connections=4))


# --- the scenario -----------------------------------------------------------------------------------


async def sessions_stay_home(cluster: Cluster) -> str:
    """A handshake-era session's id names its replica, and all its calls go there; stateless calls
    spread over the replicas. Returns the id of a session on the second replica (killed later)."""
    async with pool() as http:
        on_victim = None
        for _ in range(12):  # nginx takes turns: some session lands on the second replica
            client = Client(http, cluster.url, "handshake")
            pids = {(await client.call("tiny__pid", {}))[1] for _ in range(3)}
            assert client.session is not None and client.session.split(".")[0] in REPLICAS
            assert len(pids) == 1
            if client.session.startswith(f"{REPLICAS[1]}."):
                on_victim = client.session
                break
        assert on_victim is not None
        stateless = Client(http, cluster.url, "stateless")
        spread = {(await stateless.call("tiny__pid", {}))[1] for _ in range(9)}
        assert len(spread) >= 2, spread
    return on_victim


async def a_dead_replicas_session_is_not_found(cluster: Cluster, session: str) -> None:
    """The victim's session, asked for after the kill, gets 404: its client starts a new one."""
    async with pool() as http:
        client = Client(http, cluster.url, "handshake", session=session)
        ok, message = await client.call("tiny__echo", {"message": "anyone there?"})
        assert not ok and "Session not found" in message
        assert client.session is None  # the next call opens a new session, on a live replica
        assert await client.call("tiny__echo", {"message": "again"}) == (True, "again")
        assert client.session is not None and not client.session.startswith(f"{REPLICAS[1]}.")


async def limits_hold_across_replicas(cluster: Cluster) -> None:
    """5 requests a minute for persona `limited`, through nginx's round robin: the sixth is refused."""
    async with pool() as http:
        for persona in ("limited", "limited2"):  # the second only if a clock minute ended mid-check
            url = cluster.url.replace("/mcp", f"/personas/{persona}/mcp")
            client = Client(http, url, "stateless")
            began = time.time() // 60
            answers = [await client.call("tiny__echo", {"message": str(i)}) for i in range(5)]
            body = {"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "tiny__echo"}}
            body["params"] |= {"arguments": {"message": "sixth"}, "_meta": MODERN_META}
            refused = await http.post(url, json=body, headers=client._headers("tools/call", "tiny__echo"))
            if time.time() // 60 == began:
                break
        assert answers == [(True, str(i)) for i in range(5)]
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        error = refused.json()
        assert error["id"] == 77 and error["error"]["code"] == -32029
        assert f"persona '{persona}' is limited to 5 requests per minute" in error["error"]["message"]


async def approval_reaches_every_replica(cluster: Cluster, record: Any) -> None:
    """`mcpgw pin late` against the first replica's files; every replica serves late's tools after."""
    async with pool() as http:
        for replica in cluster.replicas:
            listed = await Client(http, replica.url, "stateless").request("tools/list", {})
            assert "late__echo" not in [t["name"] for t in listed["result"]["tools"]]  # withheld
        pinned = run_mcpgw("pin", "late", "--config", str(cluster.replicas[0].home / "servers.toml"))
        assert pinned.returncode == 0, pinned.stderr
        approved = (
            (cluster.replicas[0].home / "servers.lock").stat().st_mtime
        )  # when the approval was written
        delays = {}
        with anyio.fail_after(PROCESS_LIMIT):  # a hang guard; the delay itself is measured, not bounded
            for replica in cluster.replicas:
                client = Client(http, replica.url, "stateless")
                while True:
                    listed = await client.request("tools/list", {})
                    if "late__echo" in [t["name"] for t in listed["result"]["tools"]]:
                        break
                    await anyio.sleep(0.01)
                delays[replica.name] = round(time.time() - approved, 3)
        assert (cluster.replicas[2].home / "servers.lock").read_text() == (
            cluster.replicas[0].home / "servers.lock"
        ).read_text()
        record("pin_approval_delay_seconds", delays)
        print(f"pin approval served by every replica after: {delays}")


async def registry_edit_reaches_every_replica(cluster: Cluster) -> None:
    """A persona added to the third replica's registry file is served by the first two."""
    edited = cluster.replicas[2].home / "servers.toml"
    doc = tomlkit.parse(edited.read_text())
    doc["personas"]["broadcast"] = {}  # type: ignore[index]
    edited.write_text(tomlkit.dumps(doc))
    async with pool() as http:
        with anyio.fail_after(PROCESS_LIMIT):  # a hang guard
            for replica in cluster.replicas[:2]:
                url = replica.url.replace("/mcp", "/personas/broadcast/mcp")
                client = Client(http, url, "stateless")
                # 404 {"error": "unknown persona 'broadcast'"} until the edit is taken
                while "result" not in (listed := await client.request("tools/list", {})):
                    await anyio.sleep(0.05)
                assert "tiny__echo" in [t["name"] for t in listed["result"]["tools"]]


@dataclass
class Load:
    answered: int = 0
    results: list[str] = field(default_factory=list)
    """The message of every call answered with a result."""
    errors: Counter[str] = field(default_factory=Counter)


async def load_with_a_replica_killed(cluster: Cluster, llm: StandIn, record: Any) -> Load:
    load = Load()
    victim = cluster.replicas[1]
    per_client = CALLS // CLIENTS

    async def client(number: int) -> None:
        era = "handshake" if number % 2 else "stateless"
        async with pool() as http:
            me = Client(http, cluster.url, era)
            for i in range(per_client):
                message = f"c{number}-{i}"
                if i % SAMPLE_EVERY == SAMPLE_EVERY - 1:
                    ok, text = await me.call("modern__summarize", {"text": message})
                else:
                    ok, text = await me.call("tiny__echo", {"message": message})
                    assert not ok or text == message
                if ok:
                    load.results.append(message)
                else:
                    load.errors[next((e for e in CLEAR_ERRORS if e in text), text)] += 1
                load.answered += 1
                if load.answered == KILL_AT:
                    os.kill(victim.process.pid, signal.SIGKILL)

    llm.clear()
    began = time.monotonic()
    with anyio.fail_after(10 * PROCESS_LIMIT):  # a hang guard for the whole run
        async with anyio.create_task_group() as tg:
            for number in range(CLIENTS):
                tg.start_soon(client, number)
    seconds = time.monotonic() - began
    record("load_seconds", round(seconds, 1))
    record("load_errors", dict(load.errors))
    print(f"{CALLS} calls in {seconds:.1f}s ({CALLS / seconds:.0f}/s); errors: {dict(load.errors)}")
    return load


def audited(cluster: Cluster) -> tuple[set[str], set[str]]:
    """The messages of every tool call with a row in the cluster's audit log, and the replicas
    (`instance`) that wrote them."""
    found: set[str] = set()
    with psycopg.connect(cluster.audit_url) as db:
        rows = db.execute("select arguments, instance from events where kind = 'call'").fetchall()
    for arguments, _ in rows:
        found.update(str(v) for v in json.loads(arguments or "{}").values())
    return found, {str(instance) for _, instance in rows}


def model_tokens(llm: StandIn) -> int:
    """What the model was asked for and answered, as the stand-in counts it (tests/servers/llm.py)."""
    return sum(sum(len(json.dumps(m)) // 4 for m in r["messages"]) + 7 for r in llm.requests())


@pytest.mark.long
async def test_three_replicas_behind_nginx(cluster: Cluster, llm: StandIn, record_property: Any) -> None:
    on_victim = await sessions_stay_home(cluster)
    await limits_hold_across_replicas(cluster)
    await approval_reaches_every_replica(cluster, record_property)
    await registry_edit_reaches_every_replica(cluster)
    load = await load_with_a_replica_killed(cluster, llm, record_property)

    assert load.answered == CALLS
    assert set(load.errors) <= set(CLEAR_ERRORS), load.errors
    assert load.errors["has used its sampling budget for today"] > 0  # the budget was reached
    assert cluster.replicas[1].process.poll() is not None  # the victim is dead
    await a_dead_replicas_session_is_not_found(cluster, on_victim)
    assert sum(load.errors.values()) < CALLS // 10  # a few in flight on the victim, and the budget
    found, writers = audited(cluster)
    assert writers == set(REPLICAS)  # one log, every replica's rows in it, each named
    missing = set(load.results) - found
    assert not missing, f"{len(missing)} answered calls have no audit row, e.g. {sorted(missing)[:5]}"
    spent = model_tokens(llm)
    record_property("model_tokens", spent)
    assert 0 < spent <= BUDGET
    import redis

    day = datetime.now(UTC).date().isoformat()
    shared = redis.Redis.from_url(cluster.redis_url).hget(f"accept:budget:spent:default:{day}", "tokens")
    assert shared is not None and float(shared) <= BUDGET
