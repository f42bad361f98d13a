"""The SDK's schema checks of a forwarded call, answered in plain Python for the common shapes.

Every forwarded call pays two checks against mcp_types' per-version pydantic models: the client's
params (`methods.validate_client_request`, in the server's lanes) and the upstream's result
(`_compat.checked_result`). Neither builds anything the gateway keeps (the raw dicts pass through),
so only the verdict counts. For the shapes nearly every call has (text content, a plain `_meta`, a
bool `isError`) a few exact type tests reach the same verdict in a fraction of pydantic's time.

These checks only ever say "valid": anything they do not recognise (another content kind, a value
pydantic might coerce such as `"true"` for a bool, a version or method not listed here) goes to the
SDK's own check, so a refusal, and its error, are always the SDK's. They are written for the models
of mcp_types 2.3 and looked up by model identity (`methods.SERVER_RESULTS`/`CLIENT_REQUESTS`), so a
version whose models differ gets no fast check; `tests/test_shapes.py` holds each one to the SDK's
verdict shape by shape and pins the JSON schemas of the models they were written for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mcp_types import methods

Check = Callable[[Mapping[str, Any]], bool]

_STALE = "2025-11-25"  # the models of every handshake-era version
_MODERN = "2026-07-28"
_ROLES = frozenset({"user", "assistant"})
_LOG_LEVELS = frozenset({"alert", "critical", "debug", "emergency", "error", "info", "notice", "warning"})
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
# Exact types, tested by set membership: pydantic's lax mode also takes what these leave out (an int
# or "true" for a bool, bytes for a str), and that is left to it.
_STR = frozenset({str})
_OPT_STR = frozenset({str, type(None)})
_OPT_BOOL = frozenset({bool, type(None)})
_OPT_TOKEN = frozenset({str, int, type(None)})  # `ProgressToken | None`: `str | int`, a bool left out
_JSON_DEPTH = 16  # deeper values go to pydantic rather than risk recursion here


def validate_client_request(method: str, version: str, params: Mapping[str, Any] | None) -> None:
    """`mcp_types.methods.validate_client_request`, with the same errors (KeyError: not a method
    of `version`; ValueError: unknown version; pydantic's ValidationError: bad params)."""
    check = _REQUEST_CHECKS.get((method, version))
    if check is None or type(params) is not dict or not check(params):
        methods.validate_client_request(method, version, params)


def result_check(method: str, version: str) -> Check | None:
    """The fast check of `method`'s result in `version`, or None where only the SDK's will do."""
    return _RESULT_CHECKS.get((method, version))


def request_check(method: str, version: str) -> Check | None:
    """The fast check of `method`'s params in `version`, or None where only the SDK's will do."""
    return _REQUEST_CHECKS.get((method, version))


# --- values ---------------------------------------------------------------------------------------


def _object(value: object) -> bool:
    """`dict[str, Any]`, or a model with `extra="allow"` and no declared fields it reads."""
    return type(value) is dict and _STR.issuperset(map(type, value))


def _opt_object(value: object) -> bool:
    return value is None or (type(value) is dict and _STR.issuperset(map(type, value)))


def _json(value: object, depth: int = 0) -> bool:
    """A JSON value (2026-07-28's `JSONValue`) as `json.loads` builds it."""
    kind = type(value)
    if kind is dict:
        return depth < _JSON_DEPTH and all(
            type(key) is str and _json(item, depth + 1)
            for key, item in value.items()  # type: ignore[attr-defined]
        )
    if kind is list:
        return depth < _JSON_DEPTH and all(_json(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return kind in _JSON_SCALARS


def _opt_json_object(value: object) -> bool:
    return value is None or (type(value) is dict and _json(value))


def _annotations(value: object) -> bool:
    """`Annotations | None` (extra keys ignored)."""
    if value is None:
        return True
    if type(value) is not dict:
        return False
    audience = value.get("audience")
    priority = value.get("priority")
    return (
        (audience is None or (type(audience) is list and all(_role(role) for role in audience)))
        and type(value.get("lastModified")) in _OPT_STR
        # NaN fails the bounds, so pydantic gives its verdict on it.
        and (priority is None or (type(priority) in (int, float) and 0 <= priority <= 1))
    )


def _role(value: object) -> bool:
    return type(value) is str and value in _ROLES


def _content_block(item: object) -> bool:
    """A `ContentBlock` that is text, an image, audio or an embedded resource (a resource link, with
    more fields, is left to pydantic)."""
    if type(item) is not dict:
        return False
    kind = item.get("type")
    if kind == "text":
        own = type(item.get("text")) is str
    elif kind == "image" or kind == "audio":
        own = type(item.get("data")) is str and type(item.get("mimeType")) is str
    elif kind == "resource":
        own = _resource_contents(item.get("resource"))
    else:
        return False
    return (
        own and type(kind) is str and _opt_object(item.get("_meta")) and _annotations(item.get("annotations"))
    )


def _resource_contents(item: object) -> bool:
    """`TextResourceContents | BlobResourceContents`."""
    return (
        type(item) is dict
        and type(item.get("uri")) is str
        and (type(item.get("text")) is str or type(item.get("blob")) is str)
        and type(item.get("mimeType")) in _OPT_STR
        and _opt_object(item.get("_meta"))
    )


def _prompt_message(item: object) -> bool:
    return type(item) is dict and _role(item.get("role")) and _content_block(item.get("content"))


# --- results --------------------------------------------------------------------------------------


def _call_tool_result(raw: Mapping[str, Any]) -> bool:
    """2025-11-25 `CallToolResult` (extra keys ignored)."""
    content = raw.get("content")
    return (
        type(content) is list
        and all(_content_block(item) for item in content)
        and type(raw.get("isError")) in _OPT_BOOL
        and _opt_object(raw.get("structuredContent"))
        and _opt_object(raw.get("_meta"))
    )


def _read_resource_result(raw: Mapping[str, Any]) -> bool:
    contents = raw.get("contents")
    return (
        type(contents) is list
        and all(_resource_contents(item) for item in contents)
        and _opt_object(raw.get("_meta"))
    )


def _get_prompt_result(raw: Mapping[str, Any]) -> bool:
    messages = raw.get("messages")
    return (
        type(messages) is list
        and all(_prompt_message(item) for item in messages)
        and type(raw.get("description")) in _OPT_STR
        and _opt_object(raw.get("_meta"))
    )


def _input_required_arm(raw: Mapping[str, Any]) -> bool:
    """2026-07-28's `X | InputRequiredResult` rows: the second arm has only optional fields beside
    `resultType`, so whatever satisfies it satisfies the union, whatever the first arm says."""
    return (
        type(raw.get("resultType")) is str
        and raw.get("inputRequests") is None
        and type(raw.get("requestState")) in _OPT_STR
        and _opt_object(raw.get("_meta"))
    )


_RESULTS: Mapping[tuple[str, str], Check] = {
    ("tools/call", _STALE): _call_tool_result,
    ("resources/read", _STALE): _read_resource_result,
    ("prompts/get", _STALE): _get_prompt_result,
    ("tools/call", _MODERN): _input_required_arm,
    ("resources/read", _MODERN): _input_required_arm,
    ("prompts/get", _MODERN): _input_required_arm,
}


# --- requests (the params; the envelope is the SDK's stub) ----------------------------------------


def _stale_meta(params: Mapping[str, Any]) -> bool:
    """2025-11-25 `Meta | None` (extra keys allowed)."""
    meta = params.get("_meta")
    return meta is None or (_object(meta) and type(meta.get("progressToken")) in _OPT_TOKEN)


def _call_tool_params(params: Mapping[str, Any]) -> bool:
    return (
        type(params.get("name")) is str
        and _opt_object(params.get("arguments"))
        and params.get("task") is None
        and _stale_meta(params)
    )


def _read_resource_params(params: Mapping[str, Any]) -> bool:
    return type(params.get("uri")) is str and _stale_meta(params)


def _prompt_arguments(value: object) -> bool:
    """`dict[str, str] | None`."""
    return value is None or (
        type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())
    )


def _get_prompt_params(params: Mapping[str, Any]) -> bool:
    return (
        type(params.get("name")) is str and _prompt_arguments(params.get("arguments")) and _stale_meta(params)
    )


def _modern_meta(params: Mapping[str, Any]) -> bool:
    """2026-07-28 `RequestMetaObject`: required, naming the client's version and capabilities."""
    meta = params.get("_meta")
    if not _object(meta):
        return False
    assert isinstance(meta, dict)
    level = meta.get("io.modelcontextprotocol/logLevel")
    return (
        type(meta.get("io.modelcontextprotocol/protocolVersion")) is str
        and _capabilities(meta.get("io.modelcontextprotocol/clientCapabilities"))
        and _client_info(meta.get("io.modelcontextprotocol/clientInfo"))
        and (level is None or (type(level) is str and level in _LOG_LEVELS))
        and type(meta.get("progressToken")) in _OPT_TOKEN
    )


def _capabilities(value: object) -> bool:
    """2026-07-28 `ClientCapabilities` (required; extra keys ignored)."""
    if type(value) is not dict:
        return False
    elicitation, sampling = value.get("elicitation"), value.get("sampling")
    experimental, extensions = value.get("experimental"), value.get("extensions")
    return (
        (
            elicitation is None
            or (
                type(elicitation) is dict
                and _opt_json_object(elicitation.get("form"))
                and _opt_json_object(elicitation.get("url"))
            )
        )
        and (
            sampling is None
            or (
                type(sampling) is dict
                and _opt_json_object(sampling.get("context"))
                and _opt_json_object(sampling.get("tools"))
            )
        )
        # dict[str, JSONObject]: each value an object itself
        and (experimental is None or (_object(experimental) and _json_objects(experimental)))
        and (extensions is None or (_object(extensions) and _json_objects(extensions)))
        and _opt_object(value.get("roots"))
    )


def _json_objects(value: dict[str, Any]) -> bool:
    return all(type(item) is dict and _json(item) for item in value.values())


def _client_info(value: object) -> bool:
    """2026-07-28 `Implementation | None` (icons left to pydantic)."""
    return value is None or (
        type(value) is dict
        and type(value.get("name")) is str
        and type(value.get("version")) is str
        and type(value.get("title")) in _OPT_STR
        and type(value.get("description")) in _OPT_STR
        and type(value.get("websiteUrl")) in _OPT_STR
        and value.get("icons") is None
    )


def _modern_continuation(params: Mapping[str, Any]) -> bool:
    """`inputResponses`/`requestState` of a 2026-07-28 request: absent on a first call."""
    return params.get("inputResponses") is None and type(params.get("requestState")) in _OPT_STR


def _modern_call_tool_params(params: Mapping[str, Any]) -> bool:
    return (
        type(params.get("name")) is str
        and _opt_object(params.get("arguments"))
        and _modern_continuation(params)
        and _modern_meta(params)
    )


def _modern_read_resource_params(params: Mapping[str, Any]) -> bool:
    return type(params.get("uri")) is str and _modern_continuation(params) and _modern_meta(params)


def _modern_get_prompt_params(params: Mapping[str, Any]) -> bool:
    return (
        type(params.get("name")) is str
        and _prompt_arguments(params.get("arguments"))
        and _modern_continuation(params)
        and _modern_meta(params)
    )


_REQUESTS: Mapping[tuple[str, str], Check] = {
    ("tools/call", _STALE): _call_tool_params,
    ("resources/read", _STALE): _read_resource_params,
    ("prompts/get", _STALE): _get_prompt_params,
    ("tools/call", _MODERN): _modern_call_tool_params,
    ("resources/read", _MODERN): _modern_read_resource_params,
    ("prompts/get", _MODERN): _modern_get_prompt_params,
}


def _by_model(
    surface: Mapping[tuple[str, str], Any], checks: Mapping[tuple[str, str], Check]
) -> dict[tuple[str, str], Check]:
    """Each row of `surface` whose model is the one a check was written for (every handshake-era
    version shares 2025-11-25's), with that check: a version whose models differ gets none. Built
    once, from the SDK's rows, so what a peer sends as a method or version adds nothing to it."""
    return {
        (method, version): check
        for (method, version), model in surface.items()
        for era in (_STALE, _MODERN)
        if (check := checks.get((method, era))) is not None and model is surface.get((method, era))
    }


_RESULT_CHECKS = _by_model(methods.SERVER_RESULTS, _RESULTS)
_REQUEST_CHECKS = _by_model(methods.CLIENT_REQUESTS, _REQUESTS)
