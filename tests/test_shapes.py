"""`mcpgw.shapes` gives the SDK's verdict on every shape, for every protocol version the gateway speaks.

The fast checks only ever say "valid" and leave the rest to the SDK's check; these tests hold them
to that, shape by shape (valid ones, wrong types, missing fields, extra keys, other content kinds,
values pydantic's lax mode coerces, nulls, nested `_meta`, a huge text):
- an upstream's result: `_compat.checked_result` (the fast path on) against the SDK's own client
  session receiving the same result (`ClientSession.send_request`): the same refusal, or the same
  result as the session leaves it;
- a client's params: `shapes.validate_client_request` against `methods.validate_client_request`;
- through the gateway, over a real stdio upstream's pipe: an invalid result is refused with the error
  a client saw before the fast path, a valid one passes unchanged.
And they pin the mcp_types models the checks were written for: a new SDK's models fail the pin.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import methods
from mcp_types.version import KNOWN_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter, ValidationError

import parity
from conftest import SERVERS
from mcpgw import _compat, shapes
from mcpgw.config import validate

pytestmark = pytest.mark.anyio

GONE = object()  # a mutation that removes the key
TEXT = {"type": "text", "text": "hi"}
IMAGE = {"type": "image", "data": "iVBORw0K", "mimeType": "image/png"}
AUDIO = {"type": "audio", "data": "UklGRiQ=", "mimeType": "audio/wav"}
EMBEDDED = {"type": "resource", "resource": {"uri": "file:///a", "text": "t", "mimeType": "text/plain"}}
LINK = {"type": "resource_link", "uri": "file:///a", "name": "a"}
NESTED = {"a": {"b": [1, {"c": None}], "d": "x" * 10}}
# Values every typed field meets: right, wrong, null, coercible by pydantic's lax mode.
ODD = [None, "", "x", 0, 1, 2, -1, 0.5, math.nan, True, False, "true", [], {}, {1: 2}, ["x"], b"x", ("x",)]


def _mutated(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    if value is GONE:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def _variants(base: dict[str, Any], keys: list[str]) -> Iterator[dict[str, Any]]:
    yield base
    for key in keys:
        for value in [GONE, *ODD]:
            yield _mutated(base, key, value)


def _items(item: dict[str, Any], keys: list[str]) -> Iterator[Any]:
    """Content items: `item`, each field of it mutated, and other kinds of item."""
    yield from _variants(item, keys)
    yield from _variants(IMAGE, ["data", "mimeType", "type"])
    yield from _variants(AUDIO, ["data", "mimeType", "type"])
    yield from _variants(EMBEDDED, ["resource", "type"])
    for resource in _variants(EMBEDDED["resource"], ["uri", "text", "mimeType", "_meta"]):
        yield {**EMBEDDED, "resource": resource}
        yield {**EMBEDDED, "resource": {**resource, "blob": "aGk="}}
    yield from [LINK, {**LINK, "name": 5}, {**item, "type": "TEXT"}, None, "hi", 5, []]
    for notes in [
        {"audience": ["user", "assistant"], "priority": 0.5, "lastModified": "2025-01-12T15:00:58Z"},
        {"priority": 1},
        {"priority": 0},
        {"extra": 1},
        *({"priority": odd} for odd in ODD),
        *({"audience": odd} for odd in ODD),
        {"audience": ["robot"]},
        {"audience": [None]},
        *({"lastModified": odd} for odd in ODD),
    ]:
        yield {**item, "annotations": notes}
    yield {**item, "_meta": NESTED, "extra": [1]}


def _results(method: str) -> Iterator[dict[str, Any]]:
    meta_keys = ["_meta", "resultType", "inputRequests", "requestState", "ttlMs", "cacheScope"]
    if method == "tools/call":
        base: dict[str, Any] = {"content": [TEXT], "isError": False, "structuredContent": NESTED}
        yield from _variants(base, ["content", "isError", "structuredContent", *meta_keys])
        for item in _items(TEXT, ["type", "text", "_meta", "annotations"]):
            yield {"content": [TEXT, item]}
        yield {"content": [{"type": "text", "text": "x" * 1_000_000}] * 3}
        yield {"content": [{"type": "text", "text": "\ud800 surrogate"}], "is_error": "x", "other": None}
        yield {"content": [TEXT], "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "u"}, **NESTED}}
        yield {"content": [TEXT], "inputRequests": {"a": {"method": "elicitation/create"}}}
    elif method == "resources/read":
        text = {"uri": "file:///a", "text": "t", "mimeType": "text/plain"}
        yield from _variants({"contents": [text]}, ["contents", *meta_keys])
        for item in _variants(text, ["uri", "text", "mimeType", "_meta"]):
            yield {"contents": [item]}
        yield {"contents": [{"uri": "file:///b", "blob": "aGk="}, {**text, "blob": "aGk="}]}
        yield {"contents": [{"uri": "file:///b", "blob": 5}]}
        yield {"contents": [{"uri": "file:///b"}]}
    else:
        message = {"role": "user", "content": TEXT}
        yield from _variants(
            {"messages": [message], "description": "d"}, ["messages", "description", *meta_keys]
        )
        for item in _variants(message, ["role", "content"]):
            yield {"messages": [item]}
        for content in _items(TEXT, ["type", "text"]):
            yield {"messages": [{"role": "assistant", "content": content}]}


@pytest.fixture
async def session_at() -> Any:
    """A real SDK client session, told its version as a handshake or a discovery tells it, whose
    peer answers each request with the result `answer` holds: the reference the gateway must match."""
    to_client, client_read = anyio.create_memory_object_stream[SessionMessage](math.inf)
    client_write, from_client = anyio.create_memory_object_stream[SessionMessage](math.inf)
    answer: list[dict[str, Any]] = []

    async def peer() -> None:
        async for message in from_client:
            # Unvalidated: a result with non-string keys must reach the session as sent.
            response = types.JSONRPCResponse.model_construct(
                jsonrpc="2.0",
                id=message.message.id,  # type: ignore[union-attr]
                result=answer.pop(),
            )
            await to_client.send(SessionMessage(response))

    async with anyio.create_task_group() as tg, ClientSession(client_read, client_write) as session:
        tg.start_soon(peer)

        def at(version: str) -> tuple[ClientSession, list[dict[str, Any]]]:
            info = {"capabilities": types.ServerCapabilities()}
            session.adopt(
                types.DiscoverResult(supported_versions=[version], **info)  # type: ignore[arg-type]
                if version in MODERN_PROTOCOL_VERSIONS
                else types.InitializeResult(
                    protocol_version=version,
                    server_info=types.Implementation(name="upstream", version="1"),
                    **info,  # type: ignore[arg-type]
                )
            )
            return session, answer

        yield at
        tg.cancel_scope.cancel()


_PARAMS = {
    "tools/call": {"name": "echo"},
    "resources/read": {"uri": "file:///a"},
    "prompts/get": {"name": "brief"},
}


@pytest.mark.parametrize("version", KNOWN_PROTOCOL_VERSIONS)
async def test_a_result_gets_the_sdk_sessions_verdict_and_shape(version: str, session_at: Any) -> None:
    session, answer = session_at(version)
    as_dict = TypeAdapter(dict[str, Any])
    fast = 0
    for method in _PARAMS:
        check = shapes.result_check(method, version)
        for shape in _results(method):
            sdk_raw = copy.deepcopy(shape)
            if version in MODERN_PROTOCOL_VERSIONS:
                sdk_raw.setdefault("resultType", "complete")  # mcpgw's reading (test_upstream_fidelity)
            answer.append(sdk_raw)
            request = types.Request[dict[str, Any], str](method=method, params=dict(_PARAMS[method]))
            try:
                expected: Any = await session.send_request(request, as_dict)
            except ValidationError as exc:
                expected = exc.errors(include_url=False)
            try:
                got: Any = _compat.checked_result(session, method, copy.deepcopy(shape))
            except ValidationError as exc:
                got = exc.errors(include_url=False)
            assert repr(got) == repr(expected), (method, shape)  # repr: NaN is not equal to itself
            assert check is not None
            fast += check(sdk_raw)
    assert fast > 100  # the fast path is taken, not only the SDK's check


def _meta_2026(**extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        **extra,
    }


def _request_metas(version: str) -> Iterator[Any]:
    if version not in MODERN_PROTOCOL_VERSIONS:
        yield from [GONE, None, {}, {"progressToken": "t"}, {"progressToken": 7}, {"progress_token": [1]}]
        yield from ({"progressToken": odd, **NESTED} for odd in ODD)
        yield from ODD
        return
    client_info = {"name": "client", "version": "1.0", "title": "C", "websiteUrl": "https://c.example"}
    capabilities = {
        "sampling": {"tools": {}, "context": NESTED},
        "elicitation": {"form": {}, "url": {"x": [1, None]}},
        "roots": {"listChanged": True},
        "experimental": {"x": NESTED},
        "extensions": {"io.example/x": {}},
    }
    base = _meta_2026(**{"io.modelcontextprotocol/clientInfo": client_info, "progressToken": 3})
    yield from [GONE, None, _meta_2026(), base]
    caps = "io.modelcontextprotocol/clientCapabilities"
    yield from _variants(base, [caps, "io.modelcontextprotocol/protocolVersion", "progressToken"])
    yield from _variants(base, ["io.modelcontextprotocol/clientInfo", "io.modelcontextprotocol/logLevel"])
    yield {**base, "io.modelcontextprotocol/logLevel": "debug"}
    yield {**base, "io.modelcontextprotocol/logLevel": "loud"}
    for key in ["name", "version", "title", "description", "websiteUrl", "icons"]:
        for odd in [GONE, *ODD, [{"src": "https://c.example/i.png"}]]:
            yield {**base, "io.modelcontextprotocol/clientInfo": _mutated(client_info, key, odd)}
    yield {**base, caps: capabilities}
    for key in capabilities:
        for odd in [GONE, *ODD, {"form": 5}, {"x": 5}, {"x": {"y": b"z"}}, {"x": {"y": ("t",)}}]:
            yield {**base, caps: _mutated(capabilities, key, odd)}
        yield {**base, caps: {**capabilities, key: {"x": {"deep": [[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}}}}


def _params(method: str, version: str) -> Iterator[Any]:
    base = dict(_PARAMS[method])
    if method != "resources/read":
        base["arguments"] = {"a": "b"}
    for meta in _request_metas(version):
        yield _mutated(base, "_meta", meta)
    meta = {} if version not in MODERN_PROTOCOL_VERSIONS else {"_meta": _meta_2026()}
    keys = [*base, "task", "inputResponses", "requestState", "extra"]
    for shape in _variants({**base, **meta}, keys):
        yield shape
        if "arguments" in shape:
            yield {**shape, "arguments": {"a": 1}}
            yield {**shape, "arguments": {"n": NESTED, "t": "x" * 100_000}}
    yield from [None, [], "x", {**base, **meta, "task": {"ttl": 5}}]


def _verdict(validate: Any, method: str, version: str, params: Any) -> Any:
    try:
        validate(method, version, params)
    except ValidationError as exc:
        return exc.errors(include_url=False)
    except (KeyError, ValueError) as exc:
        return repr(exc)
    return "valid"


@pytest.mark.parametrize("version", KNOWN_PROTOCOL_VERSIONS)
def test_params_get_the_sdks_verdict(version: str) -> None:
    fast = 0
    for method in _PARAMS:
        for params in _params(method, version):
            expected = _verdict(methods.validate_client_request, method, version, params)
            got = _verdict(shapes.validate_client_request, method, version, params)
            assert repr(got) == repr(expected), (method, params)
            fast += type(params) is dict and shapes.request_check(method, version)(params)  # type: ignore[misc]
    assert fast > 20  # the fast path is taken, not only the SDK's check


@pytest.mark.parametrize("method", ["tools/list", "initialize", "ping", "tasks/get", "no/such"])
def test_other_methods_and_versions_are_the_sdks_alone(method: str) -> None:
    """No fast check where none was written, an unknown version's error and a method a version lacks."""
    assert all(shapes.result_check(method, version) is None for version in KNOWN_PROTOCOL_VERSIONS)
    for version in [*KNOWN_PROTOCOL_VERSIONS, "2099-01-01"]:
        expected = _verdict(methods.validate_client_request, method, version, {})
        assert _verdict(shapes.validate_client_request, method, version, {}) == expected
    assert shapes.result_check("tools/call", "2099-01-01") is None
    with pytest.raises(ValueError):
        shapes.validate_client_request("tools/call", "2099-01-01", {"name": "x"})


# The json schemas of the models `shapes` was written for (mcp_types 2.3): a change there means
# reading the new models and the checks again before changing these.
PINNED = {
    ("result", "tools/call", "2025-11-25"): "9c7b7a3f62b43511",
    ("result", "resources/read", "2025-11-25"): "469d4da1c0d2deae",
    ("result", "prompts/get", "2025-11-25"): "c5240f2ce8b5b6f3",
    ("result", "tools/call", "2026-07-28"): "d1f4b215546e8ffb",
    ("result", "resources/read", "2026-07-28"): "a970e8afeb4383c7",
    ("result", "prompts/get", "2026-07-28"): "91975764021e928f",
    ("request", "tools/call", "2025-11-25"): "05c9ba26a718cf67",
    ("request", "resources/read", "2025-11-25"): "3787e51cf618a1a7",
    ("request", "prompts/get", "2025-11-25"): "74589958083ed826",
    ("request", "tools/call", "2026-07-28"): "250ff8209f62b218",
    ("request", "resources/read", "2026-07-28"): "dd2c4c85e50e966e",
    ("request", "prompts/get", "2026-07-28"): "6ea674b9fdbec058",
}


def test_the_models_are_those_the_checks_were_written_for() -> None:
    seen = {}
    for kind, method, version in PINNED:
        surface = methods.SERVER_RESULTS if kind == "result" else methods.CLIENT_REQUESTS
        schema = TypeAdapter(surface[(method, version)]).json_schema(by_alias=True)
        seen[(kind, method, version)] = hashlib.sha256(
            json.dumps(schema, sort_keys=True).encode()
        ).hexdigest()[:16]
    assert seen == PINNED


# --- through the gateway --------------------------------------------------------------------------

VERBATIM = [sys.executable, str(SERVERS / "verbatim.py")]
THROUGH = {
    "handshake": [
        {"content": [TEXT], "isError": False},  # the fast path's
        {"content": [TEXT], "isError": "true"},  # pydantic's: coerced, so valid
        {"content": [IMAGE, TEXT, AUDIO, EMBEDDED], "_meta": NESTED},
        {"content": [LINK, {**IMAGE, "data": None}]},
        {"content": [TEXT], "isError": "maybe"},
        {"content": [{"type": "text", "text": 5}]},
        {"content": [{**TEXT, "annotations": {"priority": 2}}]},
        {"content": "hi"},
        {"isError": True},
        {"content": [TEXT], "structuredContent": [1]},
    ],
    "modern": [
        {"content": [TEXT], "isError": False},
        {"content": [TEXT], "structuredContent": [1], "resultType": "complete"},
        {"content": [TEXT], "_meta": []},
        {"content": [TEXT], "requestState": 5},
        {"content": [TEXT], "resultType": 5},
        {"content": [TEXT], "inputRequests": "x"},
    ],
}


@pytest.mark.parametrize(
    ("era", "mode"), [("handshake", "auto"), ("handshake", "legacy"), ("modern", "auto")]
)
async def test_an_invalid_upstream_result_is_refused_as_before(era: str, mode: str) -> None:
    """A stdio upstream's result crosses the lean path (`upstream.wire`); the client sees the upstream's
    result, or the error it saw before `shapes` existed: the count of the SDK check's problems."""
    args = [*VERBATIM[1:], *(["--modern"] if era == "modern" else [])]
    config = validate({"servers": {"up": {"command": VERBATIM[0], "args": args}}}, source="test")
    async with (
        parity.served(config, {}, audit=None) as gateway,
        parity.gateway_client(gateway, mode=mode) as client,
    ):
        version = gateway.upstreams["up"].protocol_version
        assert version is not None and (version in MODERN_PROTOCOL_VERSIONS) is (era == "modern")
        for shape in THROUGH[era]:
            sdk_raw = {"resultType": "complete", **shape} if era == "modern" else shape
            try:
                methods.validate_server_result("tools/call", version, sdk_raw)
            except ValidationError as exc:
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("up__answer", {"result": shape})
                message = f"sent an invalid tools/call result: {exc.error_count()} problems"
                assert "upstream 'up'" in caught.value.error.message, shape
                assert message in caught.value.error.message, shape
                continue
            result = await client.call_tool("up__answer", {"result": shape})
            assert parity.normalise(result.content) == [parity.normalise(c) for c in shape["content"]]
            assert result.is_error is (shape.get("isError") in (True, "true"))
