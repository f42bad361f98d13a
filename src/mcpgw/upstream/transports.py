"""The streams to one upstream: a stdio child, streamable HTTP, legacy SSE, or a server in this process
(the tests' in-process servers, and an OpenAPI upstream's fastmcp server, `upstream.openapi`).

Owns: opening an upstream's transport on the caller's exit stack and handing
back its (read, write) streams; for stdio (`upstream.stdio`), the child in its
own process group (whose pgid is remembered so the whole group can be killed)
and its stderr copied into the gateway's log; for
HTTP, one pooled client for the life of the session, the upstream's OAuth
credentials (client credentials, or the tokens of `mcpgw login`), and (tracing on)
each message's trace context as HTTP headers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import httpx2
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from mcpgw import _compat
from mcpgw.config import OpenApiServer, ServerConfig, SseServer, StdioServer
from mcpgw.observe import context as observe_context
from mcpgw.observe import tracing
from mcpgw.upstream import credentials
from mcpgw.upstream.stdio import stdio_transport
from mcpgw.upstream.wire import LeanWire

if TYPE_CHECKING:
    from mcpgw.upstream.httpwire import HttpWire

STDERR_TAIL = 8
"""Lines of a child's stderr kept for the error shown when it fails to start."""
STDERR_TAIL_WAIT = 2.0
"""Seconds to wait for the last of a failed child's stderr (a hang guard: it has exited)."""


class _StderrPump:
    """A pipe whose read end is copied line by line into the gateway's log.

    The SDK's stdio transport wants a real file for the child's stderr; this
    gives it one whose lines land in `logging`, never on our own stdio channel.
    Its last lines are kept too (`tail`): why a server did not start is usually there.
    """

    def __init__(self, server: str) -> None:
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL)
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "r", errors="replace")
        self._server = server
        self._log = logging.getLogger(f"mcpgw.upstream.{server}")
        self._thread = threading.Thread(target=self._pump, name=f"stderr-{server}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(OSError, ValueError), observe_context.upstream(self._server):
            for line in self._reader:
                self._log.info("%s", line.rstrip())
                if line.strip():
                    self.tail.append(line.rstrip()[:300])
        with contextlib.suppress(OSError):
            self._reader.close()

    def drained(self, timeout: float) -> None:
        """Wait (in a worker thread) until the child's stderr has been read to its end."""
        self._thread.join(timeout)

    def close(self) -> None:
        # Closing our copy of the write end lets the pump see EOF once the child exits.
        with contextlib.suppress(OSError):
            self.writer.close()


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Transport:
    """How one upstream is reached; `open` connects it, once per life of its session."""

    name: str
    config: ServerConfig
    secrets: Mapping[str, str] = field(default_factory=dict)
    """`[gateway] secrets_file` values, for `${NAME}` the environment does not define."""
    tokens_dir: Path | None = None
    """Where `mcpgw login` stored its tokens (`upstream.tokens`); None: no login is looked for."""
    on_refused: Callable[[str], None] | None = None
    """Told why, when the upstream refuses the login (the connection then ends)."""
    ask: Callable[[dict[str, Any]], Awaitable[Any]] | None = None
    """Where a login due during a call goes (the caller's client: `relogin`); None: it fails."""
    in_process: Any = None
    """A lowlevel `Server` (or `MCPServer`) served in this process instead of the configured
    transport: the tests' parity harness builds the whole gateway in memory with it."""
    pgid: int | None = None
    """The stdio child's process group while it runs (the supervisor kills the group and clears it)."""
    max_line: int = 64 * 1024 * 1024
    """The longest stdio line read whole; a longer one is skipped as it arrives (see `upstream.stdio`)."""
    hurried: bool = False
    """Stopping in a hurry: the child is not given time to leave by itself (see `hurry`)."""
    wire: LeanWire | HttpWire | None = None
    """The lean request path of the latest life (`upstream.wire`, `upstream.httpwire`); None for the
    others (legacy SSE, in-process)."""

    def hurry(self) -> None:
        """Stop the stdio child's whole group now (SIGTERM), and its transport without waiting for it."""
        self.hurried = True
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGTERM)

    _pump: _StderrPump | None = None

    async def stderr_tail(self) -> list[str]:
        """The last lines the stdio child wrote to stderr in its latest life (none for URL servers)."""
        pump = self._pump
        if pump is None:
            return []
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(pump.drained, STDERR_TAIL_WAIT)
        return list(pump.tail)

    async def open(self, stack: AsyncExitStack) -> tuple[Any, Any]:
        """The upstream's (read, write) streams, entered on `stack`: closing it closes them."""
        self._pump = None  # a failure before the child starts must not show an earlier life's stderr
        self.wire = None
        if self.in_process is not None:
            return await stack.enter_async_context(_compat.in_memory_transport(self.in_process))
        config = self.config
        env = credentials.environ(self.secrets) if self.secrets else None
        if isinstance(config, OpenApiServer):
            # Imported here: fastmcp's OpenAPI stack costs about half a second, paid only by gateways
            # that serve an OpenAPI upstream.
            from mcpgw.upstream import openapi

            server = await openapi.open_server(self.name, config, stack, environ=env)
            return await stack.enter_async_context(_compat.in_memory_transport(server))
        if isinstance(config, StdioServer):
            params = config.to_params(self.name, environ=env)
            pump = self._pump = _StderrPump(self.name)
            stack.callback(pump.close)

            def spawned(pid: int) -> None:
                self.pgid = pid  # the child leads its own session: its pid is its process group

            def wired(wire: LeanWire) -> None:
                self.wire = wire

            return await stack.enter_async_context(
                stdio_transport(
                    params,
                    errlog=pump.writer,
                    max_line=self.max_line,
                    on_spawn=spawned,
                    on_wire=wired,
                    hurried=lambda: self.hurried,
                )
            )
        # Imported with the first URL upstream: the logins, OAuth grants (the SDK's OAuth client) and
        # the lean HTTP wire are not loaded by a gateway of stdio upstreams (about 0.5 MiB of RSS).
        from mcpgw.upstream import grants, login
        from mcpgw.upstream.httpwire import HttpWire

        target = config.to_params(self.name, environ=env)
        oauth: httpx2.Auth | None = None
        if config.oauth is not None and config.oauth.token_url is None:
            oauth = grants.discovered_client_credentials(
                self.name, config.oauth, target.url, env or os.environ
            )
        elif config.oauth is not None:
            granted = credentials.ClientCredentials(self.name, config.oauth, env or os.environ)
            stack.push_async_callback(granted.aclose)
            await granted.token()  # a bad client secret fails the start with the token endpoint's answer
            oauth = granted
        elif self.tokens_dir is not None:
            oauth = login.upstream_auth(
                self.name,
                config,
                target.url,
                self.tokens_dir,
                env or os.environ,
                on_refused=self.on_refused,
                ask=self.ask,
            )
        # Over TLS, HTTP/2 is offered too: a server that takes it carries every call at once on one
        # connection (one handshake), where HTTP/1.1 opens one per call in flight. Plain `http://`
        # stays HTTP/1.1 (the lean path's own connections, `upstream.http1`).
        http2 = config.http2 and target.url.lower().startswith("https://")
        if isinstance(config, SseServer):
            factory = partial(_http_client, http2=http2)
            return await stack.enter_async_context(
                sse_client(target.url, headers=target.headers, auth=oauth, httpx_client_factory=factory)
            )
        # One pooled HTTP client for the life of the session: no new TLS context per call.
        http = await stack.enter_async_context(_http_client(headers=target.headers, auth=oauth, http2=http2))
        self.wire = HttpWire(http, target.url)  # used once the session is known to be 2026-07-28
        stack.callback(self.wire.close)  # its own keep-alive connections end with the session
        return await stack.enter_async_context(streamable_http_client(target.url, http_client=http))


def _http_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
    *,
    http2: bool = False,
) -> httpx2.AsyncClient:
    """An upstream's HTTP client: the MCP transports' defaults, HTTP/2 offered with `http2` (the
    server picks, by TLS ALPN), and (tracing on) each message's trace context as HTTP headers too
    (`tracing.header_hook`)."""
    # Imported here, not at the top: httpcore (2.5 MiB with h11 and h2) is not loaded by a gateway
    # without HTTP upstreams.
    from mcpgw.upstream.cork import CorkedBackend

    if http2:
        _compat.notice_closed_idle_http2()  # else the first call after the server's idle timeout fails
    http = _compat.mcp_http_client(headers=headers, auth=auth, http2=http2)
    _compat.wrap_network_backend(http, CorkedBackend)  # one write per request (`upstream.cork`)
    if timeout is not None:  # the legacy SSE transport's own (a shorter connect timeout)
        http.timeout = timeout
    if tracing.on():
        http.event_hooks = {
            **http.event_hooks,
            "request": [*http.event_hooks["request"], tracing.header_hook],
        }
    return http
