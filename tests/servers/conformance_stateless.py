"""What the conformance fixture serves on its stateless (2026-07-28) path only, as the suite's reference does.

The suite's reference "everything" server (modelcontextprotocol/conformance,
examples/servers/typescript/everything-server.ts) lists extra tools, a prompt
and a resource to 2026-07-28 requests: the multi-round-trip (SEP-2322
`input_required`) tools, the diagnostic tools the `server-stateless` scenario
probes, and hooks that change its lists. This module reproduces that behaviour,
written from reading the reference (not copied), including its quirks:

- the MRTR tools' results carry `resultType`; the two diagnostic tools'
  results do not (the reference writes those responses by hand), and neither
  do the ordinary `test_*` tools' results (see `omits_result_type`);
- a tool that needs sampling answers -32021 (HTTP 400) when the request's
  `clientCapabilities` lack it, and the capabilities tool asks only for what
  the client declared;
- `requestState` is plain JSON, except for the tampered-state tool, which signs
  it (HMAC) and rejects a changed one with -32602.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, PromptsListChanged, ToolsListChanged
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

Ctx = ServerRequestContext[Any, Any]

_KEY = secrets.token_bytes(32)
"""Signs the tampered-state tool's `requestState`; a new key per process, as the reference's."""

_EMPTY: dict[str, Any] = {"type": "object", "properties": {}}

TOOLS: list[dict[str, Any]] = [
    {"name": name, "description": description, "inputSchema": _EMPTY}
    for name, description in [
        ("test_missing_capability", "Test tool requiring sampling"),
        ("test_input_required_result_elicitation", "MRTR: asks for a name by elicitation"),
        ("test_input_required_result_sampling", "MRTR: asks the client to sample"),
        ("test_input_required_result_list_roots", "MRTR: asks for the client's roots"),
        ("test_input_required_result_request_state", "MRTR: round trip with requestState"),
        ("test_input_required_result_multiple_inputs", "MRTR: three input requests in one round"),
        ("test_input_required_result_multi_round", "MRTR: two rounds of elicitation"),
        ("test_input_required_result_tampered_state", "MRTR: HMAC-signed requestState"),
        ("test_input_required_result_capabilities", "MRTR: asks only for what the client declared"),
        ("test_streaming_elicitation", "Diagnostic: a response stream with progress"),
        ("test_logging_tool", "Diagnostic: logs only when the request set a log level"),
    ]
]
HOOKS = ("test_trigger_tool_change", "test_trigger_prompt_change")
"""Called by the suite, not listed (as in the reference)."""
PROMPT: dict[str, Any] = {
    "name": "test_input_required_result_prompt",
    "description": "MRTR: prompt that requires elicitation input",
}
RESOURCE: dict[str, Any] = {
    "uri": "test://stateless-static-text",
    "name": "Stateless Static Text",
    "description": "A static text resource served on the draft path",
    "mimeType": "text/plain",
}
RESOURCE_TEXT = "Static text content from the stateless draft path."

NAMES = {t["name"] for t in TOOLS} | set(HOOKS)
UNSTAMPED = {"test_streaming_elicitation", "test_logging_tool"}
"""The diagnostic tools: the reference writes their responses by hand, as NDJSON (`conformance_wire`)."""


def omits_result_type(name: str) -> bool:
    """Whether the reference's 2026-07-28 `tools/call` result for `name` lacks `resultType`.

    Its stateless path stamps `resultType` only on what it answers itself (the MRTR tools and the
    hooks); the ordinary tools are dispatched to its handshake-era server and relayed unstamped, and
    the diagnostic tools' responses are written by hand. Our own `era_*` tools stay stamped.
    """
    return name in UNSTAMPED or (name.startswith("test_") and name not in NAMES)


def _form(message: str, field: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def _sample(text: str, max_tokens: int) -> dict[str, Any]:
    message = {"role": "user", "content": {"type": "text", "text": text}}
    return {"method": "sampling/createMessage", "params": {"messages": [message], "maxTokens": max_tokens}}


_ROOTS: dict[str, Any] = {"method": "roots/list", "params": {}}


def _asks(requests: dict[str, Any], state: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        result["requestState"] = state
    return result


def _done(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "resultType": "complete"}


def _state(**fields: Any) -> str:
    return json.dumps({**fields, "nonce": secrets.token_hex(8)})


def _signed(**fields: Any) -> str:
    data = json.dumps({**fields, "nonce": secrets.token_hex(8)})
    mac = hmac.new(_KEY, data.encode(), hashlib.sha256).hexdigest()
    return f"{data}.{mac}"


def _verified(state: str) -> dict[str, Any] | None:
    data, _, mac = state.rpartition(".")
    expected = hmac.new(_KEY, data.encode(), hashlib.sha256).hexdigest()
    if not data or not hmac.compare_digest(mac, expected):
        return None
    loaded = json.loads(data)
    return loaded if isinstance(loaded, dict) else None


def _plain(state: str | None) -> dict[str, Any]:
    try:
        loaded = json.loads(state) if state else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _responses(
    params: types.CallToolRequestParams | types.GetPromptRequestParams,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in (params.input_responses or {}).items():
        out[key] = (
            value.model_dump(by_alias=True, mode="json", exclude_none=True)
            if isinstance(value, BaseModel)
            else value
        )
    return out


def _field(response: dict[str, Any] | None, name: str) -> str:
    value = ((response or {}).get("content") or {}).get(name)
    return value if isinstance(value, str) else "unknown"


def _caps(ctx: Ctx) -> dict[str, Any]:
    caps = ctx.session.client_capabilities
    return caps.model_dump(by_alias=True, exclude_none=True) if caps is not None else {}


async def call(ctx: Ctx, params: types.CallToolRequestParams, bus: InMemorySubscriptionBus) -> dict[str, Any]:
    """The result of one of `NAMES` (the caller checked the name and the era)."""
    name, answers, state = params.name, _responses(params), params.request_state
    if name == "test_missing_capability":
        if "sampling" not in _caps(ctx):
            raise MCPError(
                code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="MissingRequiredClientCapabilityError",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return _done("Success")
    if name == "test_input_required_result_elicitation":
        if "user_name" in answers:
            return _done(f"Hello, {_field(answers['user_name'], 'name')}!")
        return _asks({"user_name": _form("What is your name?", "name")})
    if name == "test_input_required_result_sampling":
        if "sample_request" in answers:
            text = (answers["sample_request"].get("content") or {}).get("text")
            return _done(f"Sampling result: {text if isinstance(text, str) else 'no response'}")
        return _asks({"sample_request": _sample("What is the capital of France?", 100)})
    if name == "test_input_required_result_list_roots":
        if "roots_request" in answers:
            return _done(f"Found {len(answers['roots_request'].get('roots') or [])} root(s)")
        return _asks({"roots_request": _ROOTS})
    if name == "test_input_required_result_request_state":
        ok = ((answers.get("confirm") or {}).get("content") or {}).get("ok")
        if _plain(state).get("kind") == "request-state" and ok is True:
            return _done("state-ok: requestState validated")
        return _asks({"confirm": _form("Please confirm", "ok", "boolean")}, _state(kind="request-state"))
    if name == "test_input_required_result_multiple_inputs":
        wanted = ("user_name", "greeting", "client_roots")
        if _plain(state).get("kind") == "multiple-inputs" and all(k in answers for k in wanted):
            greeting = (answers["greeting"].get("content") or {}).get("text")
            roots = answers["client_roots"].get("roots") or []
            return _done(
                f"Name: {_field(answers['user_name'], 'name')}; "
                f"Greeting: {greeting if isinstance(greeting, str) else 'Hello there!'}; Roots: {len(roots)}"
            )
        requests = {
            "user_name": _form("What is your name?", "name"),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": _ROOTS,
        }
        return _asks(requests, _state(kind="multiple-inputs"))
    if name == "test_input_required_result_multi_round":
        round_state = _plain(state)
        if round_state.get("round") == 1 and "step1" in answers:
            step2 = _form("Step 2: What is your favorite color?", "color")
            return _asks({"step2": step2}, _state(round=2, name=_field(answers["step1"], "name")))
        if round_state.get("round") == 2 and "step2" in answers:
            who = round_state.get("name") if isinstance(round_state.get("name"), str) else "friend"
            return _done(f"Multi-round complete for {who} who likes {_field(answers['step2'], 'color')}")
        return _asks({"step1": _form("Step 1: What is your name?", "name")}, _state(round=1))
    if name == "test_input_required_result_tampered_state":
        if state:
            verified = _verified(state)
            if verified is None:
                raise MCPError(code=types.INVALID_PARAMS, message="requestState integrity check failed")
            if verified.get("kind") == "tamper-test" and "confirm" in answers:
                return _done("integrity-ok: state verified")
        return _asks({"confirm": _form("Please confirm", "ok", "boolean")}, _signed(kind="tamper-test"))
    if name == "test_input_required_result_capabilities":
        caps = _caps(ctx)
        requests: dict[str, Any] = {}
        if "elicitation" in caps:
            requests["elicit_input"] = _form("Elicitation input", "value")
        if "sampling" in caps:
            requests["sample_input"] = _sample("Sample request", 50)
        if answers:
            return _done(f"capabilities-ok: received {','.join(answers)}")
        if not requests:
            return _done("No supported capabilities declared")
        return _asks(requests, _signed(kind="capabilities-test"))
    if name == "test_streaming_elicitation":
        # The reference's progress names a token nobody sent (it writes the frame by hand).
        await ctx.session.send_progress_notification(
            progress_token="token-abc", progress=50, total=100, related_request_id=str(ctx.request_id)
        )
        return {"content": [{"type": "text", "text": "Streaming complete"}]}
    if name == "test_logging_tool":
        # The SDK delivers it only when the request's `_meta` set a log level, as the spec asks.
        await ctx.session.send_log_message(
            "info", "Diagnostic trace logging activated", related_request_id=ctx.request_id
        )
        return {"content": [{"type": "text", "text": "Logging evaluated"}]}
    if name in HOOKS:
        await bus.publish(ToolsListChanged() if name == "test_trigger_tool_change" else PromptsListChanged())
        return _done("Mutation triggered")
    raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")


def prompt(params: types.GetPromptRequestParams) -> dict[str, Any]:
    """`test_input_required_result_prompt`: asks for a context, then uses it."""
    answers = _responses(params)
    if "user_context" in answers:
        text = f"Prompt with context: {_field(answers['user_context'], 'context')}"
        return {
            "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
            "resultType": "complete",
        }
    return _asks({"user_context": _form("What context should the prompt use?", "context")})
