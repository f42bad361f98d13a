"""The in-memory parity harness: one upstream object, served directly and through mcpgw, both in this process.

Owns: `TestUpstream` (the in-memory twin of servers/upstream.py), `served` (the gateway that
`mcpgw serve` builds, over in-process upstreams), the two ways a client reaches a server here
(`wire`: JSON-RPC over memory streams; `dispatch`: the SDK's in-process dispatcher), and
`normalise`, which takes from a result only what a hop legitimately changes.

Why an MCPServer twin and not servers/upstream.py's FastMCP object: fastmcp 4.2 keeps its
lowlevel `Server` on a private attribute (`FastMCP._mcp_server`), and neither `mcp.Client` nor
`build_gateway(in_process=...)` takes a FastMCP object. The SDK's `MCPServer` is taken by both.

Why the gateway side defaults to `wire`: `Client(server)` in a 2026-07-28 mode skips JSON-RPC
and calls the handlers directly, with no progress token and no `notifications/cancelled`; a
real client's requests cross a wire, so the gateway is tested over one (as `serve_stdio` runs
it: the same server, the same initialization options).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import anyio.lowlevel
import mcp_types as types
from mcp import Client
from mcp.server import Server
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.utilities.types import Audio, Image
from mcp.shared.message import SessionMessage
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcpgw.assembly import build_gateway
from mcpgw.audit import AuditLog
from mcpgw.config import Registry, validate
from mcpgw.core.gateway import Gateway
from mcpgw.server import leanlane
from mcpgw.server.handlers import build_server
from mcpgw.server.notify import notification_options

MODES = ["auto", "legacy"]
"""`auto` negotiates 2026-07-28 with mcpgw; `legacy` is the 2025-11-25 handshake."""
Link = Literal["wire", "dispatch"]

PNG_1x1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WAV = (
    b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
    b"D\xac\x00\x00\x88X\x01\x00\x02\x00\x10\x00data\x00\x00\x00\x00"
)
ITEM_IDS = ["1", "10", "42", "7"]
_instances = itertools.count(1)
READ_ONLY = types.ToolAnnotations(read_only_hint=True)


@dataclass
class TestUpstream:
    """An MCP server with every content type, structured output, errors, progress, cancellation, list
    changes, resources, templates, prompts and completions, that records what reaches it.

    `calls`: every `tools/call` it received (name and arguments), in order, as the upstream saw it.
    `cancelled`: set when a `sleep` call is cancelled (by a timeout or a client's cancellation).
    """

    name: str = "upstream"
    calls: list[dict[str, Any]] = field(default_factory=list)
    cancelled: anyio.Event = field(default_factory=anyio.Event)
    instance: int = field(default_factory=lambda: next(_instances))
    server: MCPServer = field(init=False)

    __test__ = False  # not a pytest test class, whatever its name

    def __post_init__(self) -> None:
        self.server = MCPServer(self.name, instructions="Test upstream for mcpgw.")
        self.server.middleware.append(self._record)
        self._tools()
        self._others()

    async def _record(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/call" and ctx.params is not None:
            self.calls.append({"name": ctx.params.get("name"), "arguments": ctx.params.get("arguments")})
        return await call_next(ctx)

    def _tools(self) -> None:
        mcp = self.server

        @mcp.tool(annotations=READ_ONLY)
        def echo(message: str) -> str:
            """Echo the message back."""
            return message

        @mcp.tool(annotations=READ_ONLY)
        def add(a: int, b: int) -> dict[str, int]:
            """Add two integers; structured output."""
            return {"sum": a + b}

        @mcp.tool()
        def image() -> Image:
            """Return a 1x1 PNG."""
            return Image(data=PNG_1x1, format="png")

        @mcp.tool()
        def audio() -> Audio:
            """Return a tiny WAV."""
            return Audio(data=WAV, format="wav")

        @mcp.tool()
        def mixed() -> types.CallToolResult:
            """Text, embedded resource and resource link in one result, with _meta."""
            return types.CallToolResult(
                content=[
                    types.TextContent(type="text", text="mixed"),
                    types.EmbeddedResource(
                        type="resource",
                        resource=types.TextResourceContents(
                            uri="test://embedded", mime_type="text/plain", text="inside"
                        ),
                    ),
                    types.ResourceLink(type="resource_link", uri="test://static", name="static"),
                ],
                _meta={"test/tag": "mixed-meta"},
            )

        @mcp.tool()
        def fail(reason: str = "it failed") -> str:
            """Always raises: the result has isError=true."""
            raise ValueError(reason)

        @mcp.tool()
        async def slow(ctx: Context, steps: int = 3, delay: float = 0.05) -> str:
            """Report progress `steps` times."""
            for i in range(steps):
                await ctx.report_progress(i + 1, steps, f"step {i + 1}")
                await anyio.sleep(delay)
            return f"done after {steps} steps"

        @mcp.tool()
        async def sleep(seconds: float) -> str:
            """Sleep; used for timeouts and cancellation."""
            try:
                await anyio.sleep(seconds)
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise
            return f"slept {seconds}"

        @mcp.tool()
        def pid() -> int:
            """The process id of this upstream."""
            # In one process, the instance stands for the process: two upstreams, two numbers.
            return self.instance

        @mcp.tool()
        async def roots(ctx: Context) -> list[str]:
            """The roots the client (mcpgw) answers to roots/list."""
            result = await ctx.session.list_roots()
            return [str(root.uri) for root in result.roots]

        @mcp.tool()
        async def grow(tool_name: str, ctx: Context) -> str:
            """Add a tool at run time and announce the list change, in the caller's era."""

            def added() -> str:
                return "added tool"

            mcp.add_tool(added, name=tool_name)
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await ctx.notify_tools_changed()
            else:
                await ctx.session.send_tool_list_changed()
            return f"added {tool_name}"

    def _others(self) -> None:
        mcp = self.server

        @mcp.resource("test://static", mime_type="text/plain")
        def static() -> str:
            """A static text resource."""
            return "static text"

        @mcp.resource("test://items/{item_id}", mime_type="application/json")
        def item(item_id: str) -> dict[str, str]:
            """An item by id."""
            return {"id": item_id}

        @mcp.prompt()
        def greet(name: str) -> str:
            """Greet someone."""
            return f"Hello, {name}!"

        @mcp.completion()  # type: ignore[untyped-decorator, no-untyped-call]
        async def complete(
            ref: types.PromptReference | types.ResourceTemplateReference,
            argument: types.CompletionArgument,
            context: types.CompletionContext | None,
        ) -> types.Completion:
            words = ITEM_IDS if argument.name == "item_id" else ["Ann", "Anna", "Bob"]
            return types.Completion(values=[w for w in words if w.startswith(argument.value)])


# --- the gateway, as `mcpgw serve` builds it ------------------------------------------------------


RawHandler = Callable[[ServerRequestContext[Any, Any], Any], Awaitable[dict[str, Any]]]


def raw_tools_server(name: str, *, list_tools: RawHandler, call_tool: RawHandler) -> Server[Any]:
    """A lowlevel server whose tool handlers answer raw dicts (an `input_required` result among them).

    The SDK's typed results carry `resultType`; raw ones do not, so a 2026-07-28 answer without one is
    completed here. Listings are never cached (hints of 0 ms), so each test sees what the server lists.
    """

    async def completed(
        handler: RawHandler, ctx: ServerRequestContext[Any, Any], params: Any
    ) -> dict[str, Any]:
        result = await handler(ctx, params)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            result.setdefault("resultType", "complete")
        return result

    async def listed(ctx: ServerRequestContext[Any, Any], params: Any) -> dict[str, Any]:
        return await completed(list_tools, ctx, params)

    async def called(ctx: ServerRequestContext[Any, Any], params: Any) -> dict[str, Any]:
        return await completed(call_tool, ctx, params)

    hints = {cast(CacheableMethod, m): CacheHint(ttl_ms=0, scope="private") for m in CACHEABLE_METHODS}
    server: Server[Any] = Server(name, version="1.0.0", cache_hints=hints)
    server.add_request_handler("tools/list", types.PaginatedRequestParams, listed)
    server.add_request_handler("tools/call", types.CallToolRequestParams, called)
    return server


def registry(upstreams: Mapping[str, Mapping[str, Any]] | None = None, **sections: Any) -> Registry:
    """A validated registry: `upstreams` are registry entries (in-process ones need no command)."""
    servers = {name: {"command": "in-process", **entry} for name, entry in (upstreams or {"up": {}}).items()}
    return validate({"servers": servers, **sections}, source="parity")


@asynccontextmanager
async def served(
    config: Registry,
    upstreams: Mapping[str, TestUpstream | Server[Any] | MCPServer],
    *,
    audit: AuditLog | Literal["registry"] | None = "registry",
    registry_path: Path | None = None,
    metrics: bool = False,
) -> AsyncIterator[Gateway]:
    """The gateway `build_gateway` makes of `config` (read from `registry_path`, if given), its servers
    in `upstreams` served in-process, started and settled. `audit="registry"` logs where the registry
    says ($MCPGW_AUDIT_DB in tests); the log is closed, so flushed, on exit. `metrics`: counted into
    `gateway.metrics`, as when they are served."""
    in_process = {n: u.server if isinstance(u, TestUpstream) else u for n, u in upstreams.items()}
    built = build_gateway(
        config, registry_path=registry_path, audit=audit, in_process=in_process, metrics=metrics
    )
    try:
        async with built.gateway.running():
            await built.gateway.wait_started()
            yield built.gateway
    finally:
        if built.audit is not None and audit == "registry":
            built.audit.close()


@asynccontextmanager
async def wire(server: Server[Any], *, options: Any = None) -> AsyncIterator[Any]:
    """Client streams to `server` run in this task group: JSON-RPC lines over memory streams, served as
    `serve_stdio` serves stdin and stdout (the lean lane in front of the SDK, `server.leanlane`)."""
    init = options if options is not None else server.create_initialization_options()
    to_client, client_read = anyio.create_memory_object_stream[SessionMessage | Exception](math.inf)
    client_write, from_client = anyio.create_memory_object_stream[SessionMessage](math.inf)
    lines_in, lines = anyio.create_memory_object_stream[str](math.inf)

    async def carry() -> None:  # the client's messages, as the lines a stdio client writes
        async with lines_in, from_client:
            async for message in from_client:
                await lines_in.send(message.message.model_dump_json(by_alias=True, exclude_unset=True))

    def write(line: bytes) -> None:  # the server's lines, as the messages a stdio client reads
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):  # the client has gone
            to_client.send_nowait(SessionMessage(types.jsonrpc_message_adapter.validate_json(line)))

    async def drain() -> None:
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg, to_client, client_read, client_write, lines:
        tg.start_soon(carry)
        tg.start_soon(partial(leanlane.serve, server, lines, write=write, drain=drain, options=init))
        try:
            yield client_read, client_write
        finally:
            tg.cancel_scope.cancel()


def gateway_client(
    gateway: Gateway, *, mode: str = "auto", persona: str | None = None, link: Link = "wire", **kwargs: Any
) -> AbstractAsyncContextManager[Client]:
    """A client of `gateway` served as `mcpgw serve --persona PERSONA` serves it over stdio."""
    gateway.resolve_persona(persona)
    server, _ = build_server(gateway, persona=persona)
    if link == "dispatch":
        return Client(server, mode=mode, cache=None, **kwargs)
    transport = wire(server, options=server.create_initialization_options(notification_options()))
    return Client(transport, mode=mode, cache=None, **kwargs)


def direct_client(upstream: TestUpstream, *, mode: str = "auto", **kwargs: Any) -> Client:
    """A client of the upstream itself: the parity baseline."""
    return Client(upstream.server, mode=mode, cache=None, **kwargs)


@dataclass(frozen=True)
class Sides:
    """Both ends of a parity test: `direct` talks to `upstream`, `gateway` to mcpgw serving it as `up`."""

    direct: Client
    gateway: Client
    upstream: TestUpstream
    mode: str


@asynccontextmanager
async def both(
    mode: str, *, name: str = "up", upstream: TestUpstream | None = None, **sections: Any
) -> AsyncIterator[tuple[Client, Client]]:
    """A direct client of one upstream, and a client of mcpgw serving that same object as `name`."""
    upstream = upstream or TestUpstream()
    async with (
        served(registry({name: {}}, **sections), {name: upstream}) as gateway,
        direct_client(upstream, mode=mode) as direct,
        gateway_client(gateway, mode=mode) as through,
    ):
        yield direct, through


# --- comparing results ----------------------------------------------------------------------------


def normalise(value: Any) -> Any:
    """A result as JSON, minus what legitimately differs per hop: protocol stamps, cache hints and
    the `mcpgw://<server>/` prefix of URIs. Names are compared by the caller (they gain `<server>__`)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(by_alias=True, mode="json", exclude_none=True)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("ttlMs", "cacheScope", "resultType"):
                continue
            if key == "_meta" and isinstance(item, dict):
                item = {k: v for k, v in item.items() if not k.startswith("io.modelcontextprotocol/")}
                if not item:
                    continue
            if key in ("uri", "uriTemplate") and isinstance(item, str) and item.startswith("mcpgw://"):
                item = item.split("/", 3)[3]
            out[key] = normalise(item)
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


LIFESPAN_GUARD = 30.0
"""Seconds an app's ASGI lifespan may take to start: a hang guard, not a bound."""


@asynccontextmanager
async def asgi_lifespan(app: Any) -> AsyncIterator[Any]:
    """`app` with its ASGI lifespan (the SDK's session manager) started, as uvicorn runs it."""
    started, stopping = anyio.Event(), anyio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "lifespan.startup"}
        await stopping.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        with anyio.fail_after(LIFESPAN_GUARD):
            await started.wait()
        yield app
        stopping.set()
