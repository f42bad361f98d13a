"""`[limits]` in one process: requests per minute and calls in flight, per persona, as MCP errors.

In memory (the parity harness: `build_gateway` in front of an in-process upstream, an mcp `Client`
over memory streams, as over stdio). The HTTP edge's 429 and the limits shared across replicas on
Redis are tested with real processes in `test_cluster.py`; the registry's checks of `[limits]` and
`[cluster]` are with the other bad-registry cases in `test_config.py`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest
from mcp.shared.exceptions import MCPError

import parity
from mcpgw import config
from mcpgw.cluster.limits import Limiter
from mcpgw.errors import RateLimited

pytestmark = pytest.mark.anyio

HANG_GUARD = 60.0
T = TypeVar("T")


async def within_a_minute(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()`'s outcome from a run that began and ended in one clock minute: a count per minute
    can only be checked within one (a run that spans two is made again, on a fresh gateway)."""
    for _ in range(3):
        began = time.time() // 60
        outcome = await attempt()
        if time.time() // 60 == began:
            return outcome
    raise AssertionError("three runs in a row spanned a clock minute's end")


async def test_requests_per_minute_refuse_the_next_call_with_when_to_retry() -> None:
    limits = {"personas": {"default": {"requests_per_minute": 3}}}

    async def attempt() -> tuple[parity.TestUpstream, list[bool], Any]:
        upstream = parity.TestUpstream()
        async with (
            parity.served(parity.registry({"up": {}}, limits=limits), {"up": upstream}) as gateway,
            parity.gateway_client(gateway) as client,
        ):
            errors = [(await client.call_tool("up__echo", {"message": f"m{i}"})).is_error for i in range(3)]
            assert (await client.list_tools()).tools  # listings are not counted
            try:
                await client.call_tool("up__echo", {"message": "one too many"})
            except MCPError as exc:
                return upstream, errors, exc.error
            return upstream, errors, None

    upstream, errors, error = await within_a_minute(attempt)
    assert errors == [False, False, False]
    assert error is not None and error.code == -32029
    assert "persona 'default' is limited to 3 requests per minute ([limits])" in error.message
    assert isinstance(error.data, dict) and 1 <= error.data["retryAfter"] <= 60
    assert f"retry in {error.data['retryAfter']}s" in error.message
    # The refused call never reached the upstream.
    assert [c for c in upstream.calls if "one too many" in str(c)] == []


async def test_calls_in_flight_are_limited_and_a_finished_call_frees_its_slot() -> None:
    upstream = parity.TestUpstream()
    limits = {"personas": {"default": {"concurrent": 2}}}
    async with (
        parity.served(parity.registry({"up": {}}, limits=limits), {"up": upstream}) as gateway,
        parity.gateway_client(gateway) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(2):
            tg.start_soon(client.call_tool, "up__sleep", {"seconds": HANG_GUARD})
        with anyio.fail_after(HANG_GUARD):
            while gateway.in_flight < 2:
                await anyio.sleep(0.01)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("up__echo", {"message": "third"})
        assert caught.value.error.code == -32029
        assert "is limited to 2 calls in flight" in caught.value.error.message
        assert caught.value.error.data == {"retryAfter": 1}
        tg.cancel_scope.cancel()
    async with (
        parity.served(parity.registry({"up": {}}, limits=limits), {"up": upstream}) as gateway,
        parity.gateway_client(gateway) as client,
    ):
        for i in range(5):  # one at a time: each frees its slot for the next
            assert not (await client.call_tool("up__echo", {"message": str(i)})).is_error


async def test_a_limit_of_one_call_in_flight_reads_as_one() -> None:
    limits = config.LimitSettings.model_validate({"personas": {"default": {"concurrent": 1}}})
    limiter = Limiter(lambda: limits)
    held = await limiter.admit(None, None)
    with pytest.raises(RateLimited, match=r"persona 'default' is limited to 1 call in flight \(\[limits\]\)"):
        await limiter.admit(None, None)
    await limiter.release(held)
    await limiter.release(await limiter.admit(None, None))  # the slot freed is taken again


async def test_a_persona_without_a_limit_is_not_counted() -> None:
    limits = {"personas": {"tight": {"requests_per_minute": 1}}}
    sections: dict[str, Any] = {"limits": limits, "personas": {"tight": {}}}

    async def attempt() -> tuple[list[bool], str | None]:
        async with (
            parity.served(parity.registry({"up": {}}, **sections), {"up": parity.TestUpstream()}) as gateway,
            parity.gateway_client(gateway) as open_client,
            parity.gateway_client(gateway, persona="tight") as tight,
        ):
            errors = [
                (await open_client.call_tool("up__echo", {"message": str(i)})).is_error for i in range(3)
            ]
            errors.append((await tight.call_tool("up__echo", {"message": "first"})).is_error)
            try:
                await tight.call_tool("up__echo", {"message": "second"})
            except MCPError as exc:
                return errors, exc.error.message
            return errors, None

    errors, refusal = await within_a_minute(attempt)
    assert errors == [False] * 4
    assert refusal is not None and "persona 'tight' is limited to 1 request per minute ([limits])" in refusal


def test_the_replica_name_comes_from_the_environment_else_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = config.ClusterSettings(redis_url="redis://127.0.0.1:6379/0")
    monkeypatch.setenv("MCPGW_REPLICA", "blue-2")
    assert settings.replica_name() == "blue-2"
    monkeypatch.setenv("MCPGW_REPLICA", "bad name!")
    assert settings.replica_name() == "bad-name"
    assert config.ClusterSettings(redis_url="redis://h", replica="r7").replica_name() == "r7"
