"""The fixture server the MCP conformance suite's server scenarios call, on the mcp lowlevel `Server`.

The suite (npm `@modelcontextprotocol/conformance`) calls fixed names:
`test_simple_text`, `test://static-text`, `test_prompt_with_arguments`, ...
Its reference server (everything-server.ts in the suite's repository) is not
published as a package, so this is ours, reproducing that server's behaviour:
its handshake path here, its stateless 2026-07-28 path here and in
`conformance_stateless.py` (the multi-round-trip and diagnostic tools, and the
`resultType` it omits, the NDJSON its diagnostic tools write), its data in
`conformance_data.py`. Its failures too: on the stateless path the reference
relays `test_sampling` and the elicitation tools to an in-memory client that
cannot answer, so they answer "... not supported or error" there. A few extra names
(`era_*`) serve the era-matrix tests: a sleep to cancel, a tool that adds a
tool (list change), an elicitation that works in both eras.

Runs over streamable HTTP (`--http PORT`) or stdio (default). `--protocol V`
pins the one protocol version it speaks (2025-06-18, 2025-11-25 or
2026-07-28) so the era matrix can put an upstream of exactly one era behind
mcpgw; without it, it speaks every version the SDK does.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from typing import Any, cast

import anyio
import conformance_stateless as stateless
import mcp_types as types
from conformance_data import (
    DEFAULTS_SCHEMA,
    ELICIT_SCHEMA,
    ENUMS_SCHEMA,
    LEVELS,
    PNG,
    PROMPTS,
    RESOURCES,
    TEMPLATES,
    TOOLS,
    WAV,
    _tool,
)
from conformance_wire import ReferenceEventStore, as_the_reference_writes
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

# Logging, sampling and server-to-client requests are what the 2025 scenarios test; the SDK warns
# that they are deprecated as of 2026-07-28, which is noise here.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*deprecated as of 2026-07-28.*")

Ctx = ServerRequestContext[Any, Any]
ELICITING = ("test_elicitation", "test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums")


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _result(*content: dict[str, Any], is_error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": list(content)}
    if is_error:
        result["isError"] = True
    return result


class Fixture:
    """State shared by the connections of one fixture process."""

    def __init__(self, events: ReferenceEventStore) -> None:
        self.events = events
        self.tools = list(TOOLS)
        self.log_levels: dict[int, str] = {}
        self.subscriptions: set[str] = set()
        self.bus = InMemorySubscriptionBus()

    # --- tools -----------------------------------------------------------------------------------

    async def list_tools(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return {"tools": self.tools + stateless.TOOLS if _modern(ctx) else self.tools}

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> dict[str, Any]:
        name, args = params.name, params.arguments or {}
        if _modern(ctx) and name in stateless.NAMES:
            return await stateless.call(ctx, params, self.bus)
        if name == "test_simple_text":
            return _result(_text("This is a simple text response for testing."))
        if name == "test_image_content":
            return _result({"type": "image", "data": PNG, "mimeType": "image/png"})
        if name == "test_audio_content":
            return _result({"type": "audio", "data": WAV, "mimeType": "audio/wav"})
        if name == "test_embedded_resource":
            resource = {
                "uri": "test://embedded-resource",
                "mimeType": "text/plain",
                "text": "This is an embedded resource content.",
            }
            return _result({"type": "resource", "resource": resource})
        if name == "test_multiple_content_types":
            resource = {
                "uri": "test://mixed-content-resource",
                "mimeType": "application/json",
                "text": json.dumps({"test": "data", "value": 123}),
            }
            return _result(
                _text("Multiple content types test:"),
                {"type": "image", "data": PNG, "mimeType": "image/png"},
                {"type": "resource", "resource": resource},
            )
        if name == "test_tool_with_logging":
            for i, message in enumerate(
                ["Tool execution started", "Tool processing data", "Tool execution completed"]
            ):
                if i:
                    await anyio.sleep(0.05)
                await self._log(ctx, "info", message)
            return _result(_text("Tool with logging executed successfully"))
        if name == "test_tool_with_progress":
            for i, progress in enumerate((0, 50, 100)):
                if i:
                    await anyio.sleep(0.05)
                await self._progress(ctx, progress)
            return _result(_text("Tool with progress executed successfully"))
        if name == "test_error_handling":
            return _result(_text("This tool intentionally returns an error for testing"), is_error=True)
        if name in ("test_sampling", *ELICITING) and _modern(ctx):
            # The reference serves these on its stateless path through an in-memory handshake-era
            # client that cannot answer: a plain result saying so (no `input_required`).
            kind = "Sampling" if name == "test_sampling" else "Elicitation"
            return _result(_text(f"{kind} not supported or error: MCP error -32601: Method not found"))
        if name == "test_sampling":
            message = types.SamplingMessage(
                role="user", content=types.TextContent(type="text", text=args["prompt"])
            )
            reply = await ctx.session.create_message(
                [message], max_tokens=100, related_request_id=ctx.request_id
            )
            content = reply.content
            text = content.text if isinstance(content, types.TextContent) else str(content)
            return _result(_text(f"LLM response: {text}"))
        if name == "test_elicitation":
            answer = await ctx.session.elicit_form(
                str(args.get("message", "")), ELICIT_SCHEMA, related_request_id=ctx.request_id
            )
            return _result(
                _text(f"User response: action={answer.action}, content={json.dumps(answer.content)}")
            )
        if name in ELICITING:
            schema = DEFAULTS_SCHEMA if name.endswith("defaults") else ENUMS_SCHEMA
            message = "Please review and update the form fields"
            answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
            return _result(
                _text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content)}")
            )
        if name == "json_schema_2020_12_tool":
            return _result(_text(f"Received: {json.dumps(args)}"))
        if name == "test_reconnection":
            await anyio.sleep(0.05)
            if ctx.close_sse_stream is not None:
                # The client resumes with Last-Event-ID: at once, it gets the result on the resumed
                # stream; after the 5 s the stream's `retry` hints, it finds the result gone (as
                # from the reference). 3 s is ample for an immediate reconnection.
                self.events.resumed = anyio.Event()
                await ctx.close_sse_stream()
                with anyio.move_on_after(3):
                    await self.events.resumed.wait()
            return _result(_text("Reconnection test completed"))
        if name == "era_sleep":
            seconds = float(args.get("seconds", 1))
            if started := os.environ.get("FIXTURE_START_MARKER"):  # tests wait for this, not a sleep
                with open(started, "a") as handle:
                    handle.write("started\n")
            try:
                await anyio.sleep(seconds)
            except anyio.get_cancelled_exc_class():
                if marker := os.environ.get("FIXTURE_CANCEL_MARKER"):
                    with open(marker, "a") as handle:
                        handle.write("cancelled\n")
                raise
            return _result(_text(f"slept {seconds}"))
        if name == "era_add_tool":
            added = str(args["name"])
            if all(t["name"] != added for t in self.tools):
                self.tools.append(_tool(added, "Added at run time"))
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await self.bus.publish(ToolsListChanged())  # to `subscriptions/listen` streams
            else:
                await ctx.session.send_tool_list_changed()
            return _result(_text(f"added {added}"))
        if name == "era_touch":
            uri = "test://watched-resource"
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await self.bus.publish(ResourceUpdated(uri=uri))  # to listen streams that watch it
            elif uri in self.subscriptions:
                await ctx.session.send_resource_updated(uri)
            return _result(_text(f"touched {uri}"))
        if name == "era_ask":
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
            answer = await self._elicit(ctx, params, str(args["question"]), schema)
            if isinstance(answer, types.InputRequiredResult):
                return answer.model_dump(by_alias=True, mode="json", exclude_none=True)
            return _result(_text(f"{answer.action}: {json.dumps(answer.content)}"))
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")

    async def _log(self, ctx: Ctx, level: str, message: str) -> None:
        wanted = self.log_levels.get(id(ctx.session), "debug")
        if LEVELS.index(level) >= LEVELS.index(wanted):
            await ctx.session.send_log_message(
                level,  # type: ignore[arg-type]
                message,
                logger="conformance-fixture",
                related_request_id=ctx.request_id,
            )

    async def _progress(self, ctx: Ctx, progress: float) -> None:
        token = ctx.meta.get("progressToken") if ctx.meta else None
        if token is None:
            token = (ctx.params or {}).get("_meta", {}).get("progressToken")
        if token is not None:
            await ctx.session.send_progress_notification(
                progress_token=token,
                progress=progress,
                total=100,
                related_request_id=str(ctx.request_id) if ctx.request_id is not None else None,
            )

    async def _elicit(
        self, ctx: Ctx, params: types.CallToolRequestParams, message: str, schema: dict[str, Any]
    ) -> types.ElicitResult | types.InputRequiredResult:
        """A server-to-client request in the handshake era; an input_required round trip in 2026-07-28."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            responses = params.input_responses or {}
            answer = responses.get("form")
            if isinstance(answer, types.ElicitResult):
                return answer
            request = types.ElicitRequest(
                params=types.ElicitRequestFormParams(message=message, requested_schema=schema)
            )
            return types.InputRequiredResult(input_requests={"form": request})
        return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)

    # --- resources -------------------------------------------------------------------------------

    async def list_resources(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return {"resources": [*RESOURCES, stateless.RESOURCE] if _modern(ctx) else RESOURCES}

    async def list_templates(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return {"resourceTemplates": TEMPLATES}

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> dict[str, Any]:
        uri = str(params.uri)
        if uri == stateless.RESOURCE["uri"] and _modern(ctx):
            item = {"uri": uri, "mimeType": "text/plain", "text": stateless.RESOURCE_TEXT}
        elif uri == "test://static-text":
            item = {
                "uri": uri,
                "mimeType": "text/plain",
                "text": "This is the content of the static text resource.",
            }
        elif uri == "test://static-binary":
            item = {"uri": uri, "mimeType": "image/png", "blob": PNG}
        elif uri == "test://watched-resource":
            item = {"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."}
        elif uri.startswith("test://template/") and uri.endswith("/data"):
            ident = uri.removeprefix("test://template/").removesuffix("/data")
            text = json.dumps({"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"})
            item = {"uri": uri, "mimeType": "application/json", "text": text}
        else:
            # SEP-2164: -32602; the reference names the URI in `data` on its stateless path only.
            data = {"uri": uri} if _modern(ctx) else None
            raise MCPError(code=types.INVALID_PARAMS, message=f"Resource {uri} not found", data=data)
        return {"contents": [item]}

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> dict[str, Any]:
        if str(params.uri) not in {r["uri"] for r in RESOURCES}:
            raise MCPError(code=-32002, message=f"Resource not found: {params.uri}")
        self.subscriptions.add(str(params.uri))
        return {}

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
        self.subscriptions.discard(str(params.uri))
        return {}

    # --- prompts and completion ------------------------------------------------------------------

    async def list_prompts(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return {"prompts": [*PROMPTS, stateless.PROMPT] if _modern(ctx) else PROMPTS}

    async def get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> dict[str, Any]:
        args = params.arguments or {}
        if params.name == stateless.PROMPT["name"] and _modern(ctx):
            return stateless.prompt(params)
        if params.name == "test_simple_prompt":
            messages = [{"role": "user", "content": _text("This is a simple prompt for testing.")}]
        elif params.name == "test_prompt_with_arguments":
            text = f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"
            messages = [{"role": "user", "content": _text(text)}]
        elif params.name == "test_prompt_with_embedded_resource":
            resource = {
                "uri": args.get("resourceUri", "test://example-resource"),
                "mimeType": "text/plain",
                "text": "Embedded resource content for testing.",
            }
            messages = [
                {"role": "user", "content": {"type": "resource", "resource": resource}},
                {"role": "user", "content": _text("Please process the embedded resource above.")},
            ]
        elif params.name == "test_prompt_with_image":
            messages = [
                {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
                {"role": "user", "content": _text("Please analyze the image above.")},
            ]
        else:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        return {"messages": messages}

    async def complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> dict[str, Any]:
        words = ["paris", "park", "party"]
        values = [w for w in words if w.startswith(params.argument.value)] or words
        return {"completion": {"values": values, "total": len(values), "hasMore": False}}

    async def set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> dict[str, Any]:
        self.log_levels[id(ctx.session)] = params.level
        return {}


def build(protocol: str | None = None, *, events: ReferenceEventStore | None = None) -> Server[Any]:
    fixture = Fixture(events or ReferenceEventStore())
    hints = {cast(CacheableMethod, m): CacheHint(ttl_ms=0, scope="private") for m in CACHEABLE_METHODS}
    server: Server[Any] = Server(
        "conformance-fixture",
        version="1.0.0",
        instructions="mcpgw conformance fixture",
        cache_hints=hints,
        on_subscriptions_listen=ListenHandler(fixture.bus),
    )
    handlers: list[tuple[str, Any, Any]] = [
        ("tools/list", types.PaginatedRequestParams, fixture.list_tools),
        ("tools/call", types.CallToolRequestParams, fixture.call_tool),
        ("resources/list", types.PaginatedRequestParams, fixture.list_resources),
        ("resources/templates/list", types.PaginatedRequestParams, fixture.list_templates),
        ("resources/read", types.ReadResourceRequestParams, fixture.read_resource),
        ("resources/subscribe", types.SubscribeRequestParams, fixture.subscribe),
        ("resources/unsubscribe", types.UnsubscribeRequestParams, fixture.unsubscribe),
        ("prompts/list", types.PaginatedRequestParams, fixture.list_prompts),
        ("prompts/get", types.GetPromptRequestParams, fixture.get_prompt),
        ("completion/complete", types.CompleteRequestParams, fixture.complete),
        ("logging/setLevel", types.SetLevelRequestParams, fixture.set_level),
    ]
    for method, params_type, handler in handlers:
        server.add_request_handler(method, params_type, _typed_result(handler))
    if protocol is not None:
        _pin(server, protocol)
    return server


def _modern(ctx: Ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _typed_result(handler: Any) -> Any:
    """2026-07-28 results say their `resultType`; the SDK adds it to typed results, not to dicts.

    Where the reference omits it, `conformance_wire` takes it off the wire again.
    """

    async def wrapped(ctx: Ctx, params: Any) -> Any:
        result = await handler(ctx, params)
        if _modern(ctx) and isinstance(result, dict):
            result.setdefault("resultType", "complete")
        return result

    return wrapped


def _pin(server: Server[Any], protocol: str) -> None:
    """Speak exactly `protocol`: the other era's entry point is refused, as a one-era server would."""
    import mcp.server.runner as runner

    if protocol in HANDSHAKE_PROTOCOL_VERSIONS:
        # The handshake answers every client with this version (the client then accepts or hangs up).
        runner.HANDSHAKE_PROTOCOL_VERSIONS = (protocol,)  # type: ignore[misc]
        runner.LATEST_HANDSHAKE_VERSION = protocol  # type: ignore[misc]
        refused, error = "server/discover", MCPError(code=types.METHOD_NOT_FOUND, message="Method not found")
    elif protocol in MODERN_PROTOCOL_VERSIONS:
        refused = "initialize"
        error = MCPError(
            code=types.UNSUPPORTED_PROTOCOL_VERSION,
            message="this server speaks only 2026-07-28",
            data={"supported": [protocol], "requested": None},
        )
    else:
        raise SystemExit(f"unknown protocol version {protocol}")

    async def refuse(ctx: Ctx, call_next: Any) -> Any:
        if ctx.method == refused:
            raise error
        return await call_next(ctx)

    server.middleware = [refuse, *server.middleware]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on this port")
    parser.add_argument("--protocol", default=None, help="the one protocol version to speak")
    args = parser.parse_args()
    events = ReferenceEventStore()
    server = build(args.protocol, events=events)
    if args.http is None:
        from mcp.server.runner import serve_loop
        from mcp.server.stdio import stdio_server

        async def serve_stdio() -> None:
            async with stdio_server() as (read, write):
                options = server.create_initialization_options(NotificationOptions(tools_changed=True))
                if args.protocol in HANDSHAKE_PROTOCOL_VERSIONS:
                    # The handshake-only loop: the first request does not get to choose the 2026 era.
                    async with server.lifespan(server) as state:
                        await serve_loop(server, read, write, lifespan_state=state, init_options=options)
                else:
                    await server.run(read, write, options)

        anyio.run(serve_stdio)
        return

    import uvicorn

    # An event store makes SSE streams resumable: `test_reconnection` closes its stream mid-call.
    app = server.streamable_http_app(host="127.0.0.1", event_store=events, retry_interval=5000)
    uvicorn.run(as_the_reference_writes(app), host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
