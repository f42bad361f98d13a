"""A test upstream for the era bridges: resource subscriptions and roots, in the one era it is told to speak.

`--protocol V` pins the protocol version (2025-11-25 or 2026-07-28), as in the
conformance fixture. It has two resources (`test://watched`, `test://secret`)
and three tools:

- `touch(uri)`: says `uri` changed, to whoever subscribed to it (handshake era:
  `resources/subscribe`; 2026-07-28: the listen streams that named it);
- `watchers()`: the URIs someone is subscribed to right now, as JSON (so a test
  sees the gateway take and drop its upstream subscriptions);
- `roots()`: asks the client for its roots (handshake era: a `roots/list`
  request; 2026-07-28: an `input_required` result with a `roots/list` input
  request) and returns them, with whether the client declared the capability;
- `exit()`: exits the process just after answering (the gateway restarts it); `pid()`: its process id;
- `roots_and_sample()`: asks for the roots and a sampling completion at once
  (2026-07-28: both in one `input_required` result) and returns both.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import warnings
from collections import Counter
from typing import Any, cast

import anyio
import mcp_types as types
from conformance import _pin, _typed_result
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

warnings.filterwarnings("ignore", message=".*deprecated as of 2026-07-28.*")

Ctx = ServerRequestContext[Any, Any]
RESOURCES = [
    {"uri": "test://watched", "name": "watched", "mimeType": "text/plain"},
    {"uri": "test://secret", "name": "secret", "mimeType": "text/plain"},
]
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}
TOOLS = [
    {
        "name": "touch",
        "description": "Say a resource changed",
        "inputSchema": {"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]},
    },
    {"name": "watchers", "description": "The URIs subscribed to now", "inputSchema": NO_ARGS},
    {"name": "roots", "description": "The client's roots", "inputSchema": NO_ARGS},
    {"name": "exit", "description": "Exit the process just after answering", "inputSchema": NO_ARGS},
    {"name": "pid", "description": "The process id", "inputSchema": NO_ARGS},
    {
        "name": "roots_and_sample",
        "description": "The client's roots and a sampled line",
        "inputSchema": NO_ARGS,
    },
]


def _text(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


class Watched:
    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self.subscribed: Counter[str] = Counter()
        self.sessions: dict[str, list[Any]] = {}

    async def on_listen(self, ctx: Ctx, params: types.SubscriptionsListenRequestParams) -> Any:
        uris = list(params.notifications.resource_subscriptions or ())
        self.subscribed.update(uris)
        try:
            return await self.listen(ctx, params)
        finally:
            self.subscribed.subtract(uris)

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> dict[str, Any]:
        uri = str(params.uri)
        if uri not in {r["uri"] for r in RESOURCES}:
            raise MCPError(code=-32002, message=f"Resource not found: {uri}")
        self.subscribed[uri] += 1
        self.sessions.setdefault(uri, []).append(ctx.session)
        return {}

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
        uri = str(params.uri)
        self.subscribed[uri] -= 1
        sessions = self.sessions.get(uri) or []
        if ctx.session in sessions:
            sessions.remove(ctx.session)
        return {}

    async def list_resources(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return {"resources": RESOURCES}

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> dict[str, Any]:
        uri = str(params.uri)
        if uri not in {r["uri"] for r in RESOURCES}:
            raise MCPError(code=-32002, message=f"Resource not found: {uri}")
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"content of {uri}"}]}

    async def list_tools(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return {"tools": TOOLS}

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> dict[str, Any]:
        args = params.arguments or {}
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        if params.name == "touch":
            uri = str(args["uri"])
            if modern:
                await self.bus.publish(ResourceUpdated(uri=uri))
            else:
                for session in list(self.sessions.get(uri) or ()):
                    await session.send_resource_updated(uri)
            return _text(f"touched {uri}")
        if params.name == "watchers":
            return _text(json.dumps(sorted(uri for uri, n in self.subscribed.items() if n > 0)))
        if params.name == "roots":
            caps = ctx.session.client_capabilities
            declared = caps is not None and caps.roots is not None
            if modern:
                answer = (params.input_responses or {}).get("roots")
                if not isinstance(answer, types.ListRootsResult):
                    required = types.InputRequiredResult(input_requests={"roots": types.ListRootsRequest()})
                    return required.model_dump(by_alias=True, mode="json", exclude_none=True)
                roots = answer.roots
            else:
                roots = (await ctx.session.list_roots()).roots
            return _text(json.dumps({"roots": [str(r.uri) for r in roots], "declared": declared}))
        if params.name == "pid":
            return _text(str(os.getpid()))
        if params.name == "exit":
            threading.Timer(0.1, os._exit, (0,)).start()
            return _text("exiting")
        if params.name == "roots_and_sample":
            message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text="hi"))
            if modern:
                answers = params.input_responses or {}
                roots_answer, sampled = answers.get("roots"), answers.get("llm")
                if not isinstance(roots_answer, types.ListRootsResult) or not isinstance(
                    sampled, types.CreateMessageResult
                ):
                    request = types.CreateMessageRequest(
                        params=types.CreateMessageRequestParams(messages=[message], max_tokens=10)
                    )
                    required = types.InputRequiredResult(
                        input_requests={"roots": types.ListRootsRequest(), "llm": request},
                        request_state=f"asked-by-{params.name}",
                    )
                    return required.model_dump(by_alias=True, mode="json", exclude_none=True)
                if params.request_state != f"asked-by-{params.name}":
                    raise MCPError(code=types.INVALID_PARAMS, message=f"lost state: {params.request_state}")
                roots = roots_answer.roots
            else:
                roots = (await ctx.session.list_roots()).roots
                sampled = await ctx.session.create_message(
                    [message], max_tokens=10, related_request_id=ctx.request_id
                )
            content = sampled.content
            text = content.text if isinstance(content, types.TextContent) else str(content)
            return _text(json.dumps({"roots": [str(r.uri) for r in roots], "sampled": text}))
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")


def build(protocol: str) -> Server[Any]:
    watched = Watched()
    hints = {cast(CacheableMethod, m): CacheHint(ttl_ms=0, scope="private") for m in CACHEABLE_METHODS}
    server: Server[Any] = Server(
        "watched", version="1.0.0", cache_hints=hints, on_subscriptions_listen=watched.on_listen
    )
    handlers: list[tuple[str, Any, Any]] = [
        ("tools/list", types.PaginatedRequestParams, watched.list_tools),
        ("tools/call", types.CallToolRequestParams, watched.call_tool),
        ("resources/list", types.PaginatedRequestParams, watched.list_resources),
        ("resources/read", types.ReadResourceRequestParams, watched.read_resource),
        ("resources/subscribe", types.SubscribeRequestParams, watched.subscribe),
        ("resources/unsubscribe", types.UnsubscribeRequestParams, watched.unsubscribe),
    ]
    for method, params_type, handler in handlers:
        server.add_request_handler(method, params_type, _typed_result(handler))
    _pin(server, protocol)
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", required=True, help="the one protocol version to speak")
    args = parser.parse_args()
    server = build(args.protocol)

    async def serve() -> None:
        async with stdio_server() as (read, write):
            options = server.create_initialization_options()
            if args.protocol in HANDSHAKE_PROTOCOL_VERSIONS:
                from mcp.server.runner import serve_loop

                async with server.lifespan(server) as state:
                    await serve_loop(server, read, write, lifespan_state=state, init_options=options)
            else:
                await server.run(read, write, options)

    anyio.run(serve)


if __name__ == "__main__":
    main()
