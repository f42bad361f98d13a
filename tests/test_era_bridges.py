"""What the eras ask of each other, bridged by mcpgw: listen-stream resource subscriptions, and roots.

A 2026-07-28 client names the resources it wants news of on its
`subscriptions/listen` stream; mcpgw subscribes to the owning upstream in that
upstream's era and delivers the news on the stream under the namespaced URI,
and drops the upstream subscription when the stream ends. A 2026-07-28 upstream
asks for roots with an `input_required` result; mcpgw answers it with the roots
configured for that server, as it answers a handshake-era upstream's `roots/list`.

Upstreams are tests/servers/watched.py pinned to one era each: `old` speaks
2025-11-25, `new` speaks 2026-07-28. Clients are real mcp clients, over stdio
and over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import tomlkit
from mcp import Client
from mcp.client.subscriptions import ResourceUpdated, Subscription
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError

from conftest import SERVERS, background, free_port, gateway_stdio, mcpgw_command
from mcpgw import config as config_mod
from mcpgw.assembly import build_gateway
from mcpgw.audit import AuditLog
from mcpgw.server.handlers import build_server

pytestmark = pytest.mark.anyio

ERAS = {"old": "2025-11-25", "new": "2026-07-28"}
ROOTS = ["file:///srv/project", "file:///srv/data"]


def watched(name: str) -> str:
    return f"mcpgw://{name}/test://watched"


def secret(name: str) -> str:
    return f"mcpgw://{name}/test://secret"


def write_config(tmp: Path) -> Path:
    servers = {
        name: {
            "command": sys.executable,
            "args": [str(SERVERS / "watched.py"), "--protocol", era],
            "roots": ROOTS,
        }
        for name, era in ERAS.items()
    }
    document = {
        "servers": servers,
        # `reader` may read neither server's secret.
        "personas": {"reader": {"resources": {"deny": ["mcpgw://*/test://secret"]}}},
        # Sampling goes to the client, in either upstream era (`roots_and_sample`).
        "sampling": {"policy": "relay"},
    }
    path = tmp / "servers.toml"
    path.write_text(tomlkit.dumps(document))
    return path


async def text_of(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> Any:
    result = await client.call_tool(tool, arguments or {})
    assert not result.is_error, result
    return json.loads(result.content[0].text) if tool.endswith(("watchers", "roots", "sample")) else None  # type: ignore[union-attr]


async def next_update(subscription: Subscription, timeout: float = 60.0) -> str:
    with anyio.fail_after(timeout):
        async for event in subscription:
            if isinstance(event, ResourceUpdated):
                return event.uri
    raise AssertionError("the stream ended without an update")


async def no_update(subscription: Subscription, wait: float = 0.4) -> None:
    with anyio.move_on_after(wait):
        async for event in subscription:
            raise AssertionError(f"unexpected {event}")


async def pid_of(client: Client, server: str) -> str:
    result = await client.call_tool(f"{server}__pid", {})
    assert not result.is_error, result
    return result.content[0].text  # type: ignore[union-attr]


async def watchers_become(client: Client, server: str, expected: list[str]) -> None:
    """The upstream's own account of what it is subscribed to (it changes just after a stream closes)."""
    with anyio.fail_after(60):
        while await text_of(client, f"{server}__watchers") != expected:
            await anyio.sleep(0.05)


def audit_rows(db: Path, **where: str) -> list[dict[str, Any]]:
    clause = " and ".join(f"{k} = ?" for k in where)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"select * from events where {clause}", list(where.values()))]


# --- over stdio: one gateway, one 2026-07-28 client as `reader` -------------------------------------


@pytest.mark.parametrize("server", list(ERAS))
async def test_listen_stream_resource_subscriptions_reach_either_era_over_stdio(
    server: str, tmp_path: Path, audit_db: Path
) -> None:
    config = write_config(tmp_path)
    async with gateway_stdio(config, mode="2026-07-28", extra=("--persona", "reader")) as client:
        unknown = f"mcpgw://{server}/test://nothing"
        async with client.listen(
            resource_subscriptions=[watched(server), secret(server), unknown]
        ) as subscription:
            # Only what the persona may read, and the catalog has, is honored.
            assert subscription.honored.resource_subscriptions == [watched(server)]
            await watchers_become(client, server, ["test://watched"])

            await text_of(client, f"{server}__touch", {"uri": "test://watched"})
            assert await next_update(subscription) == watched(server)
            await text_of(client, f"{server}__touch", {"uri": "test://secret"})
            await no_update(subscription)

        # The stream is closed: the upstream subscription goes with it.
        await watchers_become(client, server, [])

    for _ in range(100):  # the audit writer commits in batches
        rows = audit_rows(audit_db, kind="subscribe")
        if len(rows) >= 3:
            break
        await anyio.sleep(0.05)
    outcomes = {row["name"]: row["outcome"] for row in rows}
    assert outcomes[watched(server)] == "ok"
    assert outcomes[secret(server)] == "denied"
    assert outcomes[unknown] != "ok"
    assert {row["method"] for row in rows} == {"subscriptions/listen"}


@pytest.mark.parametrize("server", list(ERAS))
async def test_listen_stream_subscriptions_survive_an_upstream_restart(server: str, tmp_path: Path) -> None:
    """The restarted upstream is subscribed again, and the client's stream hears of changes as before."""
    config = write_config(tmp_path)
    async with (
        gateway_stdio(config, mode="2026-07-28") as client,
        client.listen(resource_subscriptions=[watched(server)]) as subscription,
    ):
        await watchers_become(client, server, ["test://watched"])
        first = await pid_of(client, server)
        await text_of(client, f"{server}__exit")
        with anyio.fail_after(60):  # the gateway notices the exit and restarts it (backoff 0.25-0.5 s)
            while True:
                with contextlib.suppress(MCPError):  # not back yet
                    if await pid_of(client, server) != first:
                        break
                await anyio.sleep(0.1)
        await watchers_become(client, server, ["test://watched"])
        await text_of(client, f"{server}__touch", {"uri": "test://watched"})
        assert await next_update(subscription) == watched(server)


# --- over HTTP: one gateway for the module, clients of both eras --------------------------------------


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("bridges")
    port = free_port()
    serve = mcpgw_command(
        "serve", "--config", str(write_config(tmp)), "--transport", "http", "--port", str(port)
    )
    with background([*serve, "--log-level", "warning"], port=port, env={"MCPGW_AUDIT_DB": str(tmp / "a.db")}):
        yield f"http://127.0.0.1:{port}"


async def test_two_listen_streams_share_one_upstream_subscription_over_http(gateway_url: str) -> None:
    """Each stream hears each update once; the upstream subscription lasts until the last stream closes."""
    async with (
        Client(f"{gateway_url}/mcp", mode="2026-07-28", cache=None) as admin,
        Client(f"{gateway_url}/personas/reader/mcp", mode="2026-07-28", cache=None) as reader,
    ):
        uris = [watched("old"), watched("new"), secret("new")]
        async with admin.listen(resource_subscriptions=uris) as everything:
            assert everything.honored.resource_subscriptions == uris
            async with reader.listen(resource_subscriptions=uris, tools_list_changed=True) as some:
                assert some.honored.resource_subscriptions == [watched("old"), watched("new")]
                assert some.honored.tools_list_changed is True
                for server in ERAS:
                    await watchers_become(
                        admin, server, ["test://secret"] * (server == "new") + ["test://watched"]
                    )
                    await text_of(admin, f"{server}__touch", {"uri": "test://watched"})
                    assert await next_update(everything) == watched(server)
                    assert await next_update(some) == watched(server)
                    await no_update(some, 0.2)  # once, not once per stream

                await text_of(admin, "new__touch", {"uri": "test://secret"})
                assert await next_update(everything) == secret("new")
                await no_update(some)

            # The reader's stream closed; the admin's still holds test://watched on both upstreams.
            await anyio.sleep(0.3)
            for server in ERAS:
                await watchers_become(
                    admin, server, ["test://secret"] * (server == "new") + ["test://watched"]
                )
                await text_of(admin, f"{server}__touch", {"uri": "test://watched"})
                assert await next_update(everything) == watched(server)

        for server in ERAS:
            await watchers_become(admin, server, [])


async def test_a_listen_stream_of_list_changes_only_still_works_over_http(gateway_url: str) -> None:
    async with Client(f"{gateway_url}/mcp", mode="2026-07-28", cache=None) as client:
        async with client.listen(tools_list_changed=True) as subscription:
            assert subscription.honored.tools_list_changed is True
            assert not subscription.honored.resource_subscriptions
        for server in ERAS:
            assert await text_of(client, f"{server}__watchers") == []


@pytest.mark.parametrize("client_era", ["legacy", "2026-07-28"])
async def test_roots_reach_upstreams_of_both_eras(gateway_url: str, client_era: str) -> None:
    """A 2026-07-28 upstream's roots request (input_required) is answered as a handshake one's roots/list."""
    async with Client(f"{gateway_url}/mcp", mode=client_era, cache=None) as client:  # type: ignore[arg-type]
        for server in ERAS:
            answer = await text_of(client, f"{server}__roots")
            assert answer == {"roots": ROOTS, "declared": True}, server


async def test_roots_asked_with_sampling_at_once_are_still_answered_by_mcpgw(gateway_url: str) -> None:
    """The sampling goes to the 2026-07-28 client that can sample; the roots still come from the registry."""
    asked: list[str] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="from the client"), model="m"
        )

    async with Client(
        f"{gateway_url}/mcp", mode="2026-07-28", cache=None, sampling_callback=sample
    ) as client:
        for server in ERAS:
            answer = await text_of(client, f"{server}__roots_and_sample")
            assert answer == {"roots": ROOTS, "sampled": "from the client"}, server
    assert asked == ["sampling", "sampling"]


async def test_a_client_cannot_change_the_roots_mcpgw_answered(gateway_url: str) -> None:
    """The roots requests never reach the client; an altered requestState is refused, and nothing is lost."""

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        raise AssertionError("the test answers the sampling itself; the callback declares the capability")

    async with Client(
        f"{gateway_url}/mcp", mode="2026-07-28", cache=None, sampling_callback=sample
    ) as client:
        session = client.session
        first = await session.call_tool(
            "new__roots_and_sample", {}, allow_input_required=True, allow_claimed=False
        )
        assert isinstance(first, types.InputRequiredResult)
        assert set(first.input_requests or {}) == {"llm"}, "the roots request stays with mcpgw"
        state = first.request_state
        assert state is not None
        sampled = types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="x"), model="m"
        )
        forged = state[:-2] + ("00" if not state.endswith("00") else "11")
        with pytest.raises(MCPError) as caught:
            await session.call_tool(
                "new__roots_and_sample",
                {},
                input_responses={"llm": sampled},
                request_state=forged,
                allow_input_required=True,
                allow_claimed=False,
            )
        assert "requestState was altered" in caught.value.error.message
        done = await session.call_tool(
            "new__roots_and_sample",
            {},
            input_responses={"llm": sampled},
            request_state=state,
            allow_input_required=True,
            allow_claimed=False,
        )
        assert isinstance(done, types.CallToolResult)
        assert json.loads(done.content[0].text) == {"roots": ROOTS, "sampled": "x"}  # type: ignore[union-attr]


@pytest.mark.parametrize("server", list(ERAS))
async def test_a_handshake_client_that_leaves_without_unsubscribing_leaves_no_upstream_subscription(
    gateway_url: str, server: str
) -> None:
    """Its HTTP session ends (the client closes it): the gateway drops what it subscribed upstream."""
    async with Client(f"{gateway_url}/mcp", mode="legacy", cache=None) as observer:
        async with Client(f"{gateway_url}/mcp", mode="legacy", cache=None) as leaver:
            await leaver.subscribe_resource(watched(server))
            await watchers_become(observer, server, ["test://watched"])
        await watchers_become(observer, server, [])


# --- in memory: a listen stream that ends while its upstream subscription is pending ---------------


def hanging_upstream(asked: anyio.Event) -> Server[Any]:
    """A handshake-era upstream with one resource, whose `resources/subscribe` never answers."""
    upstream: Server[Any] = Server("hangs")

    async def list_resources(ctx: Any, params: Any) -> dict[str, Any]:
        return {"resources": [{"uri": "test://r", "name": "r"}]}

    async def subscribe(ctx: Any, params: Any) -> dict[str, Any]:
        asked.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    upstream.add_request_handler("resources/list", types.PaginatedRequestParams, list_resources)
    upstream.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    return upstream


async def test_a_listen_stream_cancelled_while_subscribing_is_audited_as_cancelled(tmp_path: Path) -> None:
    """The client leaves before the upstream answers: the row says `cancelled`, as a cancelled call's does."""
    asked = anyio.Event()
    registry = config_mod.parse('[servers.hang]\ncommand = "unused"\nera = "handshake"\n', source="test")
    log = AuditLog(tmp_path / "audit.db").start()
    built = build_gateway(registry, audit=log, in_process={"hang": hanging_upstream(asked)})
    try:
        async with built.gateway.running():
            server, _ = build_server(built.gateway)
            async with Client(server, mode="2026-07-28") as client, anyio.create_task_group() as tg:

                async def listen() -> None:
                    async with client.listen(resource_subscriptions=["mcpgw://hang/test://r"]):
                        raise AssertionError("acknowledged, though the upstream never answered")

                tg.start_soon(listen)
                with anyio.fail_after(10):
                    await asked.wait()
                tg.cancel_scope.cancel()
    finally:
        log.close()
    rows = audit_rows(tmp_path / "audit.db", kind="subscribe")
    assert [(r["name"], r["outcome"], r["error"]) for r in rows] == [
        ("mcpgw://hang/test://r", "cancelled", "cancelled by the client or at shutdown")
    ]
