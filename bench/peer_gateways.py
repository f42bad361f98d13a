"""The registries' gateways in `--only peers`, beside mcpgw, when they are installed in bench/.peers/:

  mcp-hub       (npm `mcp-hub`, Node) in front of stdio upstreams, as mcpgw and fastmcp's proxy are:
                its clients reach it over the legacy HTTP+SSE transport (GET /mcp, POST /messages;
                its /mcp answers a streamable HTTP POST with 404), in the handshake era
  ContextForge  (PyPI `mcp-contextforge-gateway`, IBM) in front of streamable HTTP upstreams, registered
                through its REST API and bundled into one virtual server, whose /servers/<id>/mcp
                its clients reach over streamable HTTP

Each is started as a user would run it on one machine: mcp-hub with an `mcpServers` file and its
state kept in the run's folder (XDG dirs, not ~); ContextForge on a SQLite file of its own, with an
in-memory cache (no Redis), no auth (as mcpgw on loopback here), its rate limits off (100 requests a
minute would stop the run) and `USE_STATEFUL_SESSIONS=true` (its default keeps no session: every
call opens a new upstream session, four upstream requests per call). A peer that is not installed is
left out with a line saying so.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client
from mcp.client.sse import sse_client

PEERS = Path(__file__).resolve().parent / ".peers"
MCP_HUB = PEERS / "node" / "node_modules" / "mcp-hub" / "dist" / "cli.js"
"""ravitemer/mcp-hub: `npm install --prefix bench/.peers/node mcp-hub` (runs on the system's Node)."""
CONTEXTFORGE = PEERS / "contextforge" / "bin" / "mcpgateway"
"""IBM/mcp-context-forge, in a venv of its own (its own mcp SDK and web stack):
`python3 -m venv bench/.peers/contextforge`, then
`bench/.peers/contextforge/bin/pip install mcp-contextforge-gateway`."""
READY_LIMIT = 300.0
"""Seconds a peer may take to say it is ready: only a hang reaches it (ContextForge's first start
migrates its database: 9-28 s on a loaded 2-core machine)."""


_TOLD: set[Path] = set()


def missing(peer: Path, name: str) -> bool:
    """Whether `peer` (called `name`) is not installed; the first time, a line says its rows are left out."""
    node = peer.suffix != ".js" or shutil.which("node") is not None
    if peer.exists() and node:
        return False
    if peer not in _TOLD:
        _TOLD.add(peer)
        print(f"  ({name} is not installed at {peer}{'' if node else ', or node is not on PATH'}: left out)")
    return True


async def _polled(url: str, ready: Any, process: Any) -> Any:
    """GET `url` until `ready(response)` says it is (its value returned); a peer that exits fails."""
    deadline = time.monotonic() + READY_LIMIT
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode} (see its log)")
            try:
                value = ready(await http.get(url))
            except (httpx.HTTPError, ValueError):  # not up yet, or a page that is not its JSON yet
                value = None
            if value is not None:
                return value
            await anyio.sleep(0.01)
    raise RuntimeError(f"{url} never said it was ready within {READY_LIMIT:g}s")


@asynccontextmanager
async def mcp_hub(h: Any, tmp: Path, servers: dict[str, dict[str, Any]], tag: str) -> AsyncIterator[Client]:
    """mcp-hub in front of `servers` (an `mcpServers` map), and a client of it once it says every server
    has connected (`/api/health` state `ready`: until then it lists only the servers connected so far)."""
    folder = tmp / tag
    config = folder / "mcp-hub.json"
    env = dict(os.environ)
    for kind in ("state", "data", "config"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        env[f"XDG_{kind.upper()}_HOME"] = str(folder / kind)
    config.write_text(json.dumps({"mcpServers": servers}))
    port = h.free_port()
    node = shutil.which("node") or "node"
    command = [node, str(MCP_HUB), "--port", str(port), "--config", str(config)]
    with h.background(command, tmp / f"{tag}.log", port=port, env=env) as process:

        def ready(response: Any) -> bool | None:
            state = response.json().get("state") if response.status_code == 200 else None
            if state == "error":
                raise RuntimeError(f"mcp-hub: {response.text[:300]}")
            return True if state == "ready" else None

        await _polled(f"http://127.0.0.1:{port}/api/health", ready, process)
        async with Client(sse_client(f"http://127.0.0.1:{port}/mcp"), mode="legacy", cache=None) as client:
            yield client


@asynccontextmanager
async def contextforge(h: Any, tmp: Path, upstreams: dict[str, str]) -> AsyncIterator[str]:
    """ContextForge with `upstreams` (name: streamable HTTP URL) registered and bundled into one virtual
    server; the URL of that server's MCP endpoint."""
    folder = tmp / "contextforge"
    folder.mkdir(exist_ok=True)  # its working directory: it reads a `.env` there, and there is none
    port = h.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP", "DATABASE_URL", "PLUGINS_"))}
    env |= {
        "DATABASE_URL": f"sqlite:///{folder}/mcp.db",
        "CACHE_TYPE": "memory",
        "JWT_SECRET_KEY": secrets.token_urlsafe(32),  # it refuses one of low entropy
        "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(32),
        "PLATFORM_ADMIN_EMAIL": "admin@example.com",
        "PLATFORM_ADMIN_PASSWORD": "Bench-only-Passw0rd!",
        "AUTH_REQUIRED": "false",
        "MCP_REQUIRE_AUTH": "false",
        "ALLOW_UNAUTHENTICATED_ADMIN": "true",
        "MCPGATEWAY_UI_ENABLED": "false",
        "MCPGATEWAY_ADMIN_API_ENABLED": "false",
        "PLUGINS_ENABLED": "false",
        "SSRF_ALLOW_LOCALHOST": "true",  # else it refuses to register an upstream on 127.0.0.1
        "RATE_LIMITING_ENABLED": "false",
        "RATE_LIMITING_REDIS_ENABLED": "false",
        "USE_STATEFUL_SESSIONS": "true",
        "LOG_LEVEL": "ERROR",
    }
    command = [str(CONTEXTFORGE), "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    log = tmp / "contextforge.log"
    with h.background(command, log, port=port, env=env, cwd=folder, listening_within=READY_LIMIT) as process:
        await _polled(f"{base}/health", lambda r: True if r.status_code == 200 else None, process)
        async with httpx.AsyncClient(base_url=base, timeout=120) as rest:
            for name, url in upstreams.items():
                body = {"name": name, "url": url, "transport": "STREAMABLEHTTP", "visibility": "public"}
                _ok(await rest.post("/gateways", json=body))
            tools = _ok(await rest.get("/tools", params={"limit": 0})).json()
            bundle = {"server": {"name": "bench", "associated_tools": [t["id"] for t in tools]}}
            server = _ok(await rest.post("/servers", json={**bundle, "visibility": "public"})).json()
        yield f"{base}/servers/{server['id']}/mcp"


def _ok(response: Any) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"ContextForge {response.request.url.path}: {response.status_code} {response.text[:300]}"
        )
    return response


async def listed(client: Client) -> list[str]:
    """Every tool's name, page after page (ContextForge pages its list)."""
    names: list[str] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return names
