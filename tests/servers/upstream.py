"""A small FastMCP upstream used by the tests and the benchmark.

Runs over stdio (default), streamable HTTP (`--http PORT`) or legacy SSE (`--sse PORT`). It exercises
every content type, structured output, errors, progress, cancellation, list
changes, resources, templates and prompts. `--tools N` adds N generated tools
(for big-catalog measurements); `--name` changes the server name.
"""

from __future__ import annotations

import argparse
import base64
import json
import os

import anyio
import mcp_types as types
from fastmcp import Context, FastMCP
from fastmcp.server.middleware import Middleware
from fastmcp.tools import ToolResult
from fastmcp.utilities.types import Audio, Image

PNG_1x1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WAV = (
    b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
    b"D\xac\x00\x00\x88X\x01\x00\x02\x00\x10\x00data\x00\x00\x00\x00"
)


class CallLog(Middleware):
    """Appends every call this upstream receives (name and arguments) to $UPSTREAM_CALL_LOG."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def on_call_tool(self, context, call_next):  # type: ignore[no-untyped-def]
        entry = {"name": context.message.name, "arguments": context.message.arguments}
        if os.environ.get("UPSTREAM_JWKS_URL"):
            from fastmcp.server.dependencies import get_access_token

            token = get_access_token()
            entry["token"] = token.claims.get("jti") if token is not None else None
            entry["bearer"] = token.token if token is not None else None
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        return await call_next(context)


def _auth():  # type: ignore[no-untyped-def]
    """With $UPSTREAM_JWKS_URL: accept only JWTs from that issuer for $UPSTREAM_AUDIENCE (OAuth tests)."""
    if not os.environ.get("UPSTREAM_JWKS_URL"):
        return None
    from fastmcp.server.auth.providers.jwt import JWTVerifier

    return JWTVerifier(
        jwks_uri=os.environ["UPSTREAM_JWKS_URL"],
        issuer=os.environ["UPSTREAM_ISSUER"],
        audience=os.environ["UPSTREAM_AUDIENCE"],
        jwks_refresh_interval=0,
    )


def build(name: str = "upstream", extra_tools: int = 0, lorem: bool = False) -> FastMCP:
    mcp = FastMCP(name, instructions="Test upstream for mcpgw.", auth=_auth())
    if log := os.environ.get("UPSTREAM_CALL_LOG"):
        mcp.add_middleware(CallLog(log))

    @mcp.tool(annotations={"readOnlyHint": True})
    def echo(message: str) -> str:
        """Echo the message back."""
        return message

    @mcp.tool(annotations={"readOnlyHint": True})
    def add(a: int, b: int) -> dict[str, int]:
        """Add two integers; structured output."""
        return {"sum": a + b}

    @mcp.tool
    def image() -> Image:
        """Return a 1x1 PNG."""
        return Image(data=PNG_1x1, format="png")

    @mcp.tool
    def audio() -> Audio:
        """Return a tiny WAV."""
        return Audio(data=WAV, format="wav")

    @mcp.tool
    def mixed() -> ToolResult:
        """Text, embedded resource and resource link in one result, with _meta."""
        return ToolResult(
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
            meta={"test/tag": "mixed-meta"},
        )

    @mcp.tool
    def fail(reason: str = "it failed") -> str:
        """Always raises: the result has isError=true."""
        raise ValueError(reason)

    @mcp.tool
    async def slow(steps: int = 3, delay: float = 0.05, ctx: Context | None = None) -> str:
        """Report progress `steps` times."""
        for i in range(steps):
            if ctx is not None:
                await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await anyio.sleep(delay)
        return f"done after {steps} steps"

    @mcp.tool
    async def sleep(seconds: float) -> str:
        """Sleep; used for timeouts and cancellation."""
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            marker = os.environ.get("UPSTREAM_CANCEL_MARKER")
            if marker:
                with open(marker, "a") as handle:
                    handle.write("cancelled\n")
            raise
        return f"slept {seconds}"

    @mcp.tool
    def pid() -> int:
        """The process id of this upstream."""
        return os.getpid()

    @mcp.tool
    async def roots(ctx: Context) -> list[str]:
        """The roots the client (mcpgw) answers to roots/list."""
        result = await ctx.session.list_roots()
        return [str(root.uri) for root in result.roots]

    @mcp.tool
    async def grow(tool_name: str, ctx: Context) -> str:
        """Add a tool at run time and announce the list change."""

        def added() -> str:
            return "added tool"

        mcp.tool(name=tool_name)(added)
        await ctx.send_notification(types.ToolListChangedNotification())
        return f"added {tool_name}"

    def lorem_text(size: int = 1000) -> str:
        """About `size` characters of text, one e-mail address and card number per ~1 kB (benchmarks)."""
        line = (
            "Order shipped to ann@example.com, paid with 4111 1111 1111 1111; "
            + "the quick brown fox jumps over the lazy dog. " * 20
            + "\n"
        )
        return (line * (size // len(line) + 1))[:size]

    if lorem:
        mcp.tool(name="lorem")(lorem_text)

    for i in range(extra_tools):

        def generated(x: int = 0, _i: int = i) -> str:
            return f"tool {_i}: {x}"

        mcp.tool(name=f"gen_{i:04d}", description=f"Generated tool number {i} for catalog benchmarks.")(
            generated
        )

    @mcp.resource("test://static", mime_type="text/plain")
    def static() -> str:
        """A static text resource."""
        return "static text"

    @mcp.resource("test://items/{item_id}", mime_type="application/json")
    def item(item_id: str) -> dict[str, str]:
        """An item by id."""
        return {"id": item_id}

    @mcp.prompt
    def greet(name: str) -> str:
        """Greet someone."""
        return f"Hello, {name}!"

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on this port")
    parser.add_argument("--sse", type=int, default=None, help="serve legacy SSE on this port")
    parser.add_argument("--tools", type=int, default=0)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--lorem", action="store_true", help="add `lorem`, big text results (benchmarks)")
    args = parser.parse_args()
    mcp = build(args.name, args.tools, args.lorem)
    if args.http is not None:
        mcp.run(transport="http", host="127.0.0.1", port=args.http, show_banner=False)
    elif args.sse is not None:
        mcp.run(transport="sse", host="127.0.0.1", port=args.sse, show_banner=False)
    else:
        mcp.run(transport="stdio", show_banner=False)


if __name__ == "__main__":
    main()
