"""The shared state of `[cluster]` on a real redis-server: budgets, rate limits, stream events, the bus.

Each test plays two replicas as two sets of objects on one Redis (what separate processes share is
exactly Redis), so what one admits, holds or stores, the other sees. The replicas as processes
behind nginx are `test_cluster.py`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server.streamable_http import EventMessage

import parity
from conftest import free_port, modules_after
from mcpgw.cluster import Cluster
from mcpgw.cluster.budgets import SharedBudgets
from mcpgw.cluster.bus import Bus
from mcpgw.cluster.events import RedisEventStore
from mcpgw.cluster.limits import Limiter
from mcpgw.config import ClusterSettings, LimitSettings, SamplingSettings
from mcpgw.errors import RateLimited, SamplingRefused, SharedStateUnavailable
from mcpgw.sampling.budget import Budgets
from services import redis_server
from test_limits import within_a_minute

pytestmark = pytest.mark.anyio

HANG_GUARD = 30.0
HANDSHAKE_UP = {"up": {"era": "handshake"}}
"""An in-process upstream reached in the handshake era: a list change is told to one session only."""
_prefixes = iter(range(1_000_000))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def replicas(url: str, count: int = 2, **settings: Any) -> list[Cluster]:
    """`count` replicas of one cluster, under a key prefix no other test uses."""
    prefix = f"t{next(_prefixes)}:"
    return [
        Cluster(ClusterSettings(redis_url=url, replica=f"r{i}", key_prefix=prefix, **settings))
        for i in range(count)
    ]


async def test_two_replicas_never_reserve_more_than_the_budget_together(redis_url: str) -> None:
    """100 tokens a day, 16 reserved per request, 20 requests in flight at once across two replicas:
    6 fit (96). Each replica on its own would have admitted 6: 12 in all, 192 tokens."""
    settings = SamplingSettings.model_validate({"personas": {"default": {"tokens_per_day": 100}}})
    clusters = replicas(redis_url)
    budgets = [Budgets(settings, shared=SharedBudgets(c)) for c in clusters]
    release = anyio.Event()
    admitted: list[int] = []
    refused: list[str] = []

    async def request(i: int) -> None:
        try:
            async with budgets[i % 2].holding(None, tokens=16, usd=0.0) as hold:
                admitted.append(i)
                await release.wait()
                await budgets[i % 2].settled(hold, tokens=15, usd=0.0)
        except SamplingRefused as exc:
            refused.append(str(exc))

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(request, i)
            while len(admitted) + len(refused) < 20:
                await anyio.sleep(0.01)
            release.set()
    assert len(admitted) == 6 and len(refused) == 14, (admitted, refused)
    assert {i % 2 for i in admitted} == {0, 1}  # both replicas admitted some
    assert all("(0 of 100 tokens, 96 more held by 6 request(s) in flight" in m for m in refused), refused
    assert await SharedBudgets(clusters[0]).spent("default", datetime.now(UTC).date().isoformat()) == (
        90.0,
        0.0,
    )
    # 90 spent: 16 more would pass 100. Across replicas a lone request gets no allowance.
    with pytest.raises(SamplingRefused, match=r"\(90 of 100 tokens, and this request may use up to 16"):
        async with budgets[1].holding(None, tokens=16, usd=0.0):
            pass
    async with budgets[0].holding(None, tokens=10, usd=0.0) as hold:
        await budgets[0].settled(hold, tokens=10, usd=0.0)
    for cluster in clusters:
        await cluster.close()


async def test_a_dead_replicas_reservation_is_freed_once_its_lease_ends(redis_url: str) -> None:
    settings = SamplingSettings.model_validate({"personas": {"default": {"tokens_per_day": 20}}})
    dead, alive = replicas(redis_url, lease=0.5)
    # The dead replica took 16 and never settled (killed mid-request).
    await Budgets(settings, shared=SharedBudgets(dead))._reserve_shared(None, tokens=16, usd=0.0)
    survivor = Budgets(settings, shared=SharedBudgets(alive))
    with pytest.raises(SamplingRefused, match="16 more held by 1 request"):
        async with survivor.holding(None, tokens=16, usd=0.0):
            pass
    with anyio.fail_after(HANG_GUARD):
        while True:
            try:
                async with survivor.holding(None, tokens=16, usd=0.0) as hold:
                    await survivor.settled(hold, tokens=16, usd=0.0)
                break
            except SamplingRefused:
                await anyio.sleep(0.05)
    await dead.close()
    await alive.close()


async def test_rate_limits_count_every_replicas_calls(redis_url: str) -> None:
    limits = LimitSettings.model_validate(
        {"personas": {"default": {"requests_per_minute": 4}}, "principal": {"concurrent": 2}}
    )

    async def attempt() -> RateLimited | None:
        clusters = replicas(redis_url)
        a, b = (Limiter(lambda: limits, cluster=c) for c in clusters)
        held = [await a.admit(None, "alice"), await b.admit(None, "alice")]
        with pytest.raises(RateLimited, match=r"principal 'alice' is limited to 2 calls in flight") as caught:
            await a.admit(None, "alice")
        assert caught.value.retry_after == 1 and caught.value.data == {"retryAfter": 1}
        await b.release(held.pop())
        held.append(await b.admit(None, "alice"))  # a released slot is free on every replica
        for ticket in held:
            await a.release(ticket)
        await b.admit(None, "bob")  # 4 admitted this minute: 3 above, and this one
        try:
            await a.admit(None, "carol")
        except RateLimited as exc:
            return exc
        finally:
            for cluster in clusters:
                await cluster.close()
        return None

    refused = await within_a_minute(attempt)
    assert refused is not None
    assert "persona 'default' is limited to 4 requests per minute" in str(refused)
    assert 1 <= refused.retry_after <= 60


async def test_a_stream_stored_on_one_replica_is_replayed_by_another(redis_url: str) -> None:
    clusters = replicas(redis_url)
    writer, reader = (RedisEventStore(c, per_stream=3, ttl=60) for c in clusters)

    def note(i: int) -> types.JSONRPCMessage:
        return types.JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"data": i})

    first = await writer.store_event("s1", None)  # the priming event
    ids = [await writer.store_event("s1", note(i)) for i in range(4)]
    await writer.store_event("s2", note(99))  # another stream: never replayed with s1
    replayed: list[EventMessage] = []

    async def send(event: EventMessage) -> None:
        replayed.append(event)

    assert await reader.replay_events_after(ids[1], send) == "s1"
    assert [e.event_id for e in replayed] == ids[2:]
    assert [json.loads(e.message.model_dump_json())["params"]["data"] for e in replayed] == [2, 3]
    # Past `per_stream` the oldest go: a resume from an event no longer in its stream replays nothing.
    replayed.clear()
    assert await reader.replay_events_after(first, send) == "s1" and replayed == []
    assert await reader.replay_events_after("unknown", send) is None
    for cluster in clusters:
        await cluster.close()


async def test_the_bus_reaches_every_other_replica_and_not_the_sender(redis_url: str) -> None:
    clusters = replicas(redis_url, count=3)
    got: dict[str, list[dict[str, Any]]] = {c.replica: [] for c in clusters}

    def keep(name: str) -> Any:
        async def handler(message: dict[str, Any]) -> None:
            got[name].append(message)

        return handler

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            for cluster in clusters:
                ready = anyio.Event()
                tg.start_soon(lambda c=cluster, r=ready: Bus(c).listen(keep(c.replica), subscribed=r))
                await ready.wait()
            await Bus(clusters[0]).publish("lock", text="pins")
            while not (got["r1"] and got["r2"]):
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert got["r0"] == []
    assert got["r1"] == got["r2"] == [{"kind": "lock", "from": "r0", "text": "pins"}]
    for cluster in clusters:
        await cluster.close()


async def test_an_unreachable_redis_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    (cluster,) = replicas(f"redis://127.0.0.1:{port}/0", count=1)
    limits = LimitSettings.model_validate({"personas": {"default": {"concurrent": 1}}})
    with pytest.raises(SharedStateUnavailable) as caught:
        await Limiter(lambda: limits, cluster=cluster).admit(None, None)
    message = str(caught.value)
    assert f"a call under [limits] needs the cluster's shared state, and Redis at 127.0.0.1:{port}" in message
    assert caught.value.jsonrpc_code == -32603
    await cluster.close()


def test_a_gateway_without_cluster_never_imports_redis(tmp_path: Path) -> None:
    """redis-py is the `cluster` extra: a gateway that does not use it never loads it, even with
    `[limits]` (counted in the process) and the whole HTTP app built."""
    config = tmp_path / "servers.toml"
    config.write_text("[limits.principal]\nconcurrent = 4\n[servers.up]\ncommand = 'in-process'\n")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mcpgw import config\n"
        "from mcpgw.assembly import build_gateway\n"
        "from mcpgw.server.http import http_app\n"
        f"registry, _ = config.load(Path({str(config)!r}))\n"
        "built = build_gateway(registry, audit=None, in_process={'up': object()})\n"
        "http_app(built.gateway, host='127.0.0.1')\n"
    )
    loaded = modules_after(script)
    assert "mcpgw.server.ratelimit" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "redis" or m == "mcpgw.cluster.events"}


async def test_a_list_change_one_replica_hears_reaches_the_others(redis_url: str) -> None:
    """One upstream object served to two replicas; `grow` adds a tool and tells only the session it
    was called on. The other replica lists its upstream again when the first says its catalog changed."""
    from mcpgw.server.replicas import Replicas

    upstream = parity.TestUpstream()
    prefix = f"t{next(_prefixes)}:"

    def cluster_of(name: str) -> dict[str, Any]:
        return {"cluster": {"redis_url": redis_url, "replica": name, "key_prefix": prefix}}

    async with (
        parity.served(parity.registry(HANDSHAKE_UP, **cluster_of("a")), {"up": upstream}, audit=None) as a,
        parity.served(parity.registry(HANDSHAKE_UP, **cluster_of("b")), {"up": upstream}, audit=None) as b,
        anyio.create_task_group() as tg,
    ):
        shared = [Replicas(g, registry_path=None, reloader=None) for g in (a, b)]
        for replica in shared:
            tg.start_soon(replica.run)
        with anyio.fail_after(HANG_GUARD):
            for replica in shared:
                await replica.subscribed.wait()
            async with parity.gateway_client(a) as client:
                assert (await client.call_tool("up__grow", {"tool_name": "fresh"})).content
            while "up__fresh" not in [t["name"] for t in b.view(None).listed_tools]:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    for gateway in (a, b):
        assert gateway.cluster is not None
        await gateway.cluster.close()
