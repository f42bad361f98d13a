"""A streamable HTTP test upstream whose tools route on `Mcp-Param-*` headers (`x-mcp-header`).

Run as `headers.py PORT`: the mcp SDK's lowlevel server under uvicorn at
http://127.0.0.1:PORT/mcp, speaking both eras. On the 2026-07-28 path the SDK
checks every `tools/call`'s `Mcp-Param-*` headers against the arguments (a
missing or different header is a 400), as a routing intermediary would rely on.
- `route(region, count, note)`: `region` and `count` carry `x-mcp-header`; it
  answers with the arguments and the raw `Mcp-Param-*` and `Mcp-Name` headers it got;
- `evolve(tag)`: after its first call `tag` carries `x-mcp-header` too, and no
  list change is announced: a client's listing of it is then stale;
- `broken(data)`: `x-mcp-header` on an object, which the spec forbids: a
  2026-07-28 client must not offer or call it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel.server import Server

TOOLS = [
    types.Tool(
        name="route",
        description="Route by region.",
        input_schema={
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "count": {"type": "integer", "x-mcp-header": "Count"},
                "note": {"type": "string"},
            },
            "required": ["region"],
        },
    ),
    types.Tool(
        name="evolve",
        description="Its `tag` gains an x-mcp-header once it has been called, with no list change announced.",
        input_schema={"type": "object", "properties": {"tag": {"type": "string"}}},
    ),
    types.Tool(
        name="broken",
        description="An x-mcp-header on an object.",
        input_schema={
            "type": "object",
            "properties": {"data": {"type": "object", "x-mcp-header": "Data"}},
        },
    ),
]


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name == "evolve":
        TOOLS[1].input_schema["properties"]["tag"]["x-mcp-header"] = "Tag"
    request = getattr(ctx, "request", None)
    headers = getattr(request, "headers", None) or {}
    seen = {k.lower(): v for k, v in headers.items() if k.lower().startswith(("mcp-param-", "mcp-name"))}
    answer = {"tool": params.name, "arguments": params.arguments or {}, "headers": seen}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(answer, sort_keys=True))]
    )


def main() -> None:
    server: Server[Any] = Server("headers", on_list_tools=list_tools, on_call_tool=call_tool)
    app = server.streamable_http_app(streamable_http_path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
