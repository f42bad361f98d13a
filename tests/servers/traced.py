"""An MCP server over streamable HTTP that says what trace context reached it (FastMCP).

Tools: `seen()`, the `traceparent` HTTP header of the POST that carried the call and the
`_meta.traceparent` of the call itself (null where absent); `ask(prompt)`, a sampling request
back to its client (the gateway), answered with the model's text.
`$TRACED_START_DELAY` seconds pass before it serves.
Run: `traced.py PORT` (streamable HTTP), `traced.py sse PORT` (legacy HTTP+SSE) or `traced.py stdio`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import mcp_types as types
from fastmcp import Context, FastMCP
from fastmcp.server.dependencies import get_http_headers

mcp = FastMCP("traced")


@mcp.tool
def seen(ctx: Context) -> dict[str, Any]:
    """The trace context this call arrived with: HTTP header and `_meta`."""
    headers = get_http_headers(include_all=True)
    meta = ctx.request_context.meta if ctx.request_context is not None else None
    meta_parent = meta.get("traceparent") if isinstance(meta, dict) else getattr(meta, "traceparent", None)
    return {"header": headers.get("traceparent"), "meta": meta_parent}


@mcp.tool
async def ask(prompt: str, ctx: Context) -> str:
    """Ask the client's model (sampling) and answer with its text."""
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
    answer = await ctx.session.create_message([message], max_tokens=50, related_request_id=ctx.request_id)
    return str(getattr(answer.content, "text", ""))


if __name__ == "__main__":
    # A slow start (seconds), so that a gateway's first call can arrive before this server is up.
    time.sleep(float(os.environ.get("TRACED_START_DELAY", "0")))
    if sys.argv[1] == "stdio":
        mcp.run(transport="stdio", show_banner=False)
    elif sys.argv[1] == "sse":
        mcp.run(transport="sse", host="127.0.0.1", port=int(sys.argv[2]), show_banner=False)
    else:
        mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False)
