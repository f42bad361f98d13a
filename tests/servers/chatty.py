"""A FastMCP upstream that logs from a resource read and a prompt, for log-attribution tests.

Tools: `hold(seconds)` (sleeps, logs nothing), `say(text)` (logs `text` at info).
Resource `chatty://note` and prompt `chatty` each log one info line before answering.
"""

from __future__ import annotations

import anyio
from fastmcp import Context, FastMCP

mcp = FastMCP("chatty")


@mcp.tool
async def hold(seconds: float) -> str:
    """Sleep; logs nothing."""
    await anyio.sleep(seconds)
    return f"held {seconds}"


@mcp.tool
async def say(text: str, ctx: Context) -> str:
    """Log `text` at info, then answer."""
    await ctx.info(text)
    return "said"


@mcp.resource("chatty://note", mime_type="text/plain")
async def note(ctx: Context) -> str:
    """Logs one line while it is read."""
    await ctx.info("from the resource read")
    return "a note"


@mcp.prompt
async def chatty(ctx: Context) -> str:
    """Logs one line while it is rendered."""
    await ctx.info("from the prompt")
    return "hello"


if __name__ == "__main__":
    mcp.run(transport="stdio", show_banner=False)
