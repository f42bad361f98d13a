"""mcpgw's transports with nothing between them: the bench's `skeleton` rows (`--only floor`).

Run as `python bench/skeleton.py serve ARGS...` (the arguments of `mcpgw serve`), it is `mcpgw serve`
with one change: a forwarded `tools/call` skips everything between the lane that takes it and the
upstream session that sends it. There is no middleware chain (so no stdio rate limit: the HTTP
edge's stays, with the rest of the edge), audit step, metrics, pipeline stage (persona rules past
the name's look-up, data rules, flows) or era bridge, and no request context of the mcp SDK. The
tool is looked up in the default persona's view and sent with the upstream session's `send` (its
lean wire, as every call of the gateway goes). The answer carries the stamp a real one does.
Everything else (the handshake, `tools/list`, any other method) is served as ever.

What it measures, beside the floor's relays (`bench/floor.py`):
  skeleton stdio    the gateway's stdio lane (the pipe read, the envelope, the answer line) and the
                    upstream's stdio wire
  skeleton http     the gateway's HTTP front (uvicorn, the ASGI edge, the stateless call's admission,
                    the answer) and the upstream's HTTP wire (its own HTTP/1.1 exchanges)

Stock `mcpgw` above the skeleton is the cost of its governance; the skeleton above the parsing relay is
the cost of its transports. A pipeline however lean cannot take a call below the skeleton's row
without a leaner transport.

Not a gateway anyone should run: past the HTTP edge it enforces nothing. It exists to be measured.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # as `bench/run.py` runs mcpgw

FORWARDED = "tools/call"


def install() -> None:
    """Wire the skeleton into mcpgw's two lanes (before the transports import the server's builder)."""
    from mcp_types import SERVER_INFO_META_KEY
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    from mcpgw.server import handlers, leanlane, serveone
    from mcpgw.upstream.session import forwardable_meta

    gateways: list[Any] = []
    build_server = handlers.build_server

    def built(gateway: Any, **options: Any) -> Any:
        gateways.append(gateway)
        return build_server(gateway, **options)

    handlers.build_server = built

    async def forwarded(params: dict[str, Any], version: str, stamp: Any) -> dict[str, Any]:
        gateway = gateways[-1]
        entry = gateway.view(None).entries[params["name"]]
        route = gateway.catalog.tool(entry.target)
        upstream = route.upstream
        sent: dict[str, Any] = {"name": route.name, "arguments": params.get("arguments") or {}}
        meta = forwardable_meta(params.get("_meta"))
        if meta:
            sent["_meta"] = meta
        session = upstream._session
        result: dict[str, Any] = await session.send(session.client, FORWARDED, sent, timeout=upstream.timeout)
        if version in MODERN_PROTOCOL_VERSIONS:
            result.setdefault("resultType", "complete")
            result["_meta"] = {**(result.get("_meta") or {}), SERVER_INFO_META_KEY: stamp}
        return result

    http_run, stdio_run = serveone.ServeOne.run, leanlane.LeanLane._run

    async def http(
        self: Any, dctx: Any, method: str, params: Any, meta: Any, request: Any, connection: Any
    ) -> dict[str, Any]:
        if method != FORWARDED:
            return await http_run(self, dctx, method, params, meta, request, connection)
        return await forwarded(params, connection.protocol_version, self._shaping._stamp)

    async def stdio(self: Any, request: Any, method: str, params: Any, connection: Any) -> dict[str, Any]:
        if method != FORWARDED or not params:
            return await stdio_run(self, request, method, params, connection)
        return await forwarded(params, connection.protocol_version, self._shaping._stamp)

    serveone.ServeOne.run = http  # type: ignore[method-assign]
    leanlane.LeanLane._run = stdio  # type: ignore[method-assign]


def main() -> None:
    install()
    from mcpgw.cli import main as cli

    sys.argv[0] = "mcpgw"
    cli()


if __name__ == "__main__":
    main()
