"""Connections to upstream MCP servers: one long-lived session each, shared by every client.

Owns: starting an upstream (stdio child in its own process group, streamable
HTTP over one pooled HTTP client, or legacy SSE), negotiating its protocol era
(`server/discover` with fallback to the `initialize` handshake), keeping its
lists, relaying requests as raw dicts so nothing the upstream sent is dropped,
and translating the mcp client's errors into `UpstreamError`s at this one
boundary.

Why not fastmcp's proxy provider: measured on fastmcp 4.2.3, it validated
handshake-era list results against 2026-only fields (dropping server-everything's
tools), re-spawned stdio upstreams when client eras switched, opened a new HTTP
session per call and started upstreams lazily. mcpgw keeps one session per
upstream, opened at start, on the mcp SDK's `ClientSession` directly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, cast

import anyio
import mcp_types as types
from mcp.client.session import ClientSession, ListRootsFnT
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import (
    ListenNotSupportedError,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    SubscriptionLost,
    ToolsListChanged,
    listen,
)
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter, ValidationError

from mcpgw import _compat, version
from mcpgw.config import Registry, ServerConfig, call_timeout, expand, resolved_command
from mcpgw.errors import ConfigError, GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from mcpgw.upstream import credentials

logger = logging.getLogger("mcpgw.upstream")

State = Literal["starting", "ready", "failed", "restarting", "stopped", "disabled"]

RESTART_BASE = 0.5
"""Seconds before the first restart; doubled per failure (with jitter) up to `backoff_max`."""
RESTART_RESET_AFTER = 30.0
PROCESS_POLL = 0.25
ListKind = Literal["tools", "resources", "resource_templates", "prompts"]

_RAW = TypeAdapter(dict[str, Any])
_LIST_METHODS: dict[ListKind, tuple[str, str]] = {
    "tools": ("tools/list", "tools"),
    "resources": ("resources/list", "resources"),
    "resource_templates": ("resources/templates/list", "resourceTemplates"),
    "prompts": ("prompts/list", "prompts"),
}
_CAPABILITY_OF: dict[ListKind, str] = {
    "tools": "tools",
    "resources": "resources",
    "resource_templates": "resources",
    "prompts": "prompts",
}
_CHANGED: dict[str, tuple[ListKind, ...]] = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/resources/list_changed": ("resources", "resource_templates"),
    "notifications/prompts/list_changed": ("prompts",),
}
_LISTEN_KINDS = ("tools", "resources", "prompts")
_EVENT_KINDS: dict[type[ServerEvent], tuple[ListKind, ...]] = {
    ToolsListChanged: ("tools",),
    ResourcesListChanged: ("resources", "resource_templates"),
    PromptsListChanged: ("prompts",),
}
ALL_LISTS: tuple[ListKind, ...] = ("tools", "resources", "resource_templates", "prompts")
_RESERVED_META_PREFIX = "io.modelcontextprotocol/"
MAX_LIST_PAGES = 100

ProgressRelay = Callable[[float, float | None, str | None], Awaitable[None]]
InputAnswer = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Answers a request an upstream sends mcpgw (server name, raw params) -> raw result."""
_SAMPLING_CAPABILITY = types.SamplingCapability(
    context=types.SamplingContextCapability(), tools=types.SamplingToolsCapability()
)


def era_of(protocol_version: str | None) -> str:
    if protocol_version is None:
        return "-"
    return "stateless" if protocol_version in MODERN_PROTOCOL_VERSIONS else "handshake"


def forwardable_meta(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A downstream request's `_meta` minus what belongs to the downstream hop.

    The protocol's own keys (version, client info, capabilities) and the
    progress token are per-connection; the upstream session stamps its own.
    """
    if not meta:
        return None
    kept = {k: v for k, v in meta.items() if k != "progressToken" and not k.startswith(_RESERVED_META_PREFIX)}
    return kept or None


class _StderrPump:
    """A pipe whose read end is copied line by line into the gateway's log.

    The SDK's stdio transport wants a real file for the child's stderr; this
    gives it one whose lines land in `logging`, never on our own stdio channel.
    """

    def __init__(self, server: str) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "r", errors="replace")
        self._log = logging.getLogger(f"mcpgw.upstream.{server}")
        self._thread = threading.Thread(target=self._pump, name=f"stderr-{server}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self._reader:
                self._log.info("%s", line.rstrip())
        with contextlib.suppress(OSError):
            self._reader.close()

    def close(self) -> None:
        # Closing our copy of the write end lets the pump see EOF once the child exits.
        with contextlib.suppress(OSError):
            self.writer.close()


def _session_leader_children() -> set[int]:
    """Pids of our direct children that lead their own session (our stdio upstreams)."""
    me = os.getpid()
    found: set[int] = set()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # fields: state ppid pgrp session ...
        if len(fields) > 3 and int(fields[1]) == me and int(fields[3]) == int(entry.name):
            found.add(int(entry.name))
    return found


_SPAWN_LOCK: anyio.Lock | None = None


def _spawn_lock() -> anyio.Lock:
    global _SPAWN_LOCK
    if _SPAWN_LOCK is None:
        _SPAWN_LOCK = anyio.Lock()
    return _SPAWN_LOCK


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Upstream:
    """One upstream server and its kept-alive session."""

    name: str
    config: ServerConfig
    timeout: float
    startup_timeout: float = 30.0
    on_change: Callable[[Upstream, tuple[ListKind, ...]], Coroutine[Any, Any, None]] | None = None
    roots: list[str] = field(default_factory=list)
    restart: bool = True
    backoff_max: float = 30.0
    on_state: Callable[[Upstream], None] | None = None
    """Told of every state change (ready, failed, stopped): the audit log records them."""
    ping_interval: float = 0.0
    ping_timeout: float = 10.0
    max_concurrent: int = 64
    max_result_bytes: int = 32 * 1024 * 1024
    secrets: Mapping[str, str] = field(default_factory=dict)
    """`[gateway] secrets_file` values, for `${NAME}` the environment does not define."""
    on_log: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    """Told of every `notifications/message` the upstream sends (its name and the params)."""
    on_resource_updated: Callable[[str, str], Awaitable[None]] | None = None
    """Told (upstream name, upstream URI) when a watched resource changed."""
    on_sampling: InputAnswer | None = None
    """Answers the upstream's `sampling/createMessage`; when set, mcpgw declares sampling to it."""
    on_elicitation: InputAnswer | None = None
    """Answers the upstream's `elicitation/create`; when set, mcpgw declares elicitation to it."""
    in_process: Any = None
    """A lowlevel `Server` (or `MCPServer`) served in this process instead of the configured
    transport: the tests' parity harness builds the whole gateway in memory with it."""

    state: State = "starting"
    error: str | None = None
    protocol_version: str | None = None
    server_info: dict[str, Any] | None = None
    instructions: str | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)
    lists: dict[ListKind, list[dict[str, Any]]] = field(
        default_factory=lambda: {"tools": [], "resources": [], "resource_templates": [], "prompts": []}
    )
    pgid: int | None = None

    _session: ClientSession | None = field(default=None, repr=False)
    _wakeup: anyio.Event = field(default_factory=anyio.Event, repr=False)
    _stopping: bool = field(default=False, repr=False)
    _settled: anyio.Event = field(default_factory=anyio.Event, repr=False)
    _task_group: anyio.abc.TaskGroup | None = field(default=None, repr=False)
    _slots: anyio.CapacityLimiter = field(init=False, repr=False)
    _watched: set[str] = field(default_factory=set, repr=False)
    _watch_scope: anyio.CancelScope | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._slots = anyio.CapacityLimiter(self.max_concurrent)

    @property
    def connected(self) -> bool:
        return self._session is not None

    @property
    def era(self) -> str:
        return era_of(self.protocol_version)

    async def wait_settled(self) -> None:
        await self._settled.wait()

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Owner task: run the upstream until `stop()`, restarting it with backoff when it fails."""
        attempt = 0
        while True:
            began = anyio.current_time()
            await self._run_once()
            if self._stopping or not self.restart or self.state != "failed":
                return
            if anyio.current_time() - began > RESTART_RESET_AFTER:
                attempt = 0  # it ran well for a while: start the backoff over
            delay = min(self.backoff_max, RESTART_BASE * 2**attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            logger.info("upstream %s: restarting in %.1fs (attempt %d)", self.name, delay, attempt)
            self._wakeup = anyio.Event()
            with anyio.move_on_after(delay):
                await self._wakeup.wait()  # `stop()` ends the wait
            if self._stopping:
                return
            self.state = "restarting"
            self.pgid = None
            self._tell_state()

    async def _watch_process(self) -> None:
        """A stdio child that exits is noticed at once, not at the next call."""
        while self.pgid is not None and self.state == "ready":
            if not _alive(self.pgid):
                self._fail("the process exited")
                return
            await anyio.sleep(PROCESS_POLL)

    async def _ping(self, session: ClientSession) -> None:
        """A cheap periodic `ping`: an HTTP upstream gone away, or a hung child, is noticed and restarted."""
        # 2026-07-28 has no `ping`; `server/discover` is its cheapest request.
        method = "server/discover" if self.era == "stateless" else "ping"
        while self.state == "ready":
            await anyio.sleep(self.ping_interval)
            try:
                await self._send(session, method, None, timeout=self.ping_timeout)
            except UpstreamReplyError:
                continue  # it answered, if only with an error: it is alive
            except UpstreamError as exc:
                if self.state == "ready":
                    self._fail(f"did not answer a ping ({exc.reason})")
                return

    async def _run_once(self) -> None:
        """One life of the upstream: connect, list, serve; failures are recorded, not raised."""
        became_ready = False
        try:
            # One scope around the whole exit stack: the transport's task groups are entered inside
            # it and must be exited inside it too. Its deadline bounds start-up only.
            with anyio.CancelScope(deadline=anyio.current_time() + self.startup_timeout) as startup:
                async with AsyncExitStack() as stack:
                    session = await self._connect(stack)
                    await self._refresh_all(session)
                    startup.deadline = math.inf
                    self._session = session
                    became_ready = True
                    self.state = "ready"
                    self.error = None
                    self._tell_state()
                    self._settled.set()
                    logger.info(
                        "upstream %s ready (%s, protocol %s, %d tools)",
                        self.name,
                        self.config.kind,
                        self.protocol_version,
                        len(self.lists["tools"]),
                    )
                    async with anyio.create_task_group() as tg:
                        self._task_group = tg
                        if self.on_change is not None:
                            tg.start_soon(self.on_change, self, ALL_LISTS)
                        tg.start_soon(self._watch_process)
                        if self.ping_interval > 0:
                            tg.start_soon(self._ping, session)
                        if self.era == "stateless":
                            tg.start_soon(self._listen, session)
                        if self._watched:
                            tg.start_soon(self._rewatch)
                        await self._wakeup.wait()
                        tg.cancel_scope.cancel()
            if startup.cancelled_caught and self.state in ("starting", "restarting"):
                raise TimeoutError
        except TimeoutError:
            self._fail(f"did not start within {self.startup_timeout:g}s")
        except ConfigError as exc:
            self._fail(str(exc))
        except Exception as exc:
            self._fail(describe(exc))
        finally:
            self._session = None
            if self.pgid is not None:
                # The SDK kills the group only when the child outlives stdin EOF; grandchildren of a
                # child that exited on its own would survive, so the whole group goes here.
                kill_process_group(self.pgid)
            if self.state == "ready":
                self.state = "stopped"
                self._tell_state()
            self._settled.set()
            # Only an attempt that served had names in the catalog; a failed restart changes nothing.
            if became_ready and not self._stopping and self.on_change is not None:
                # It died on its own: its names leave the catalog, and clients are told.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.on_change(self, ALL_LISTS)

    def _fail(self, message: str) -> None:
        if self.state == "ready":
            logger.error("upstream %s failed: %s", self.name, message)
        else:
            logger.error("upstream %s failed to start: %s", self.name, message)
        self.state = "failed"
        self.error = message
        self._tell_state()
        self._wakeup.set()

    def _tell_state(self) -> None:
        if self.on_state is not None:
            self.on_state(self)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def _connect(self, stack: AsyncExitStack) -> ClientSession:
        read, write = await self._open_transport(stack)
        session = ClientSession(
            read,
            write,
            message_handler=self._on_message,
            list_roots_callback=cast(ListRootsFnT, self._list_roots) if self.roots else None,
            client_info=types.Implementation(name="mcpgw", version=version()),
            sampling_callback=self._sample if self.on_sampling is not None else None,
            elicitation_callback=self._elicit if self.on_elicitation is not None else None,
            sampling_capabilities=_SAMPLING_CAPABILITY if self.on_sampling is not None else None,
        )
        _compat.skip_tool_result_validation(session)
        session = await stack.enter_async_context(session)
        if self.config.era == "handshake":
            await session.initialize()
        elif self.config.era == "stateless":
            await session.discover()
        else:
            await _compat.negotiate_auto(session)
        self.protocol_version = session.protocol_version
        info = session.server_info
        self.server_info = info.model_dump(by_alias=True, exclude_none=True) if info else None
        self.instructions = session.instructions
        caps = session.server_capabilities
        self.capabilities = caps.model_dump(by_alias=True, exclude_none=True) if caps else {}
        return session

    async def _open_transport(self, stack: AsyncExitStack) -> tuple[Any, Any]:
        if self.in_process is not None:
            return await stack.enter_async_context(_compat.in_memory_transport(self.in_process))
        config = self.config
        env = credentials.environ(self.secrets) if self.secrets else None
        if config.kind == "stdio":
            assert config.command is not None
            params = StdioServerParameters(
                command=resolved_command(expand(config.command, key=f"servers.{self.name}.command")),
                args=[expand(a, key=f"servers.{self.name}.args") for a in config.args],
                env={
                    k: expand(v, key=f"servers.{self.name}.env.{k}", environ=env)
                    for k, v in config.env.items()
                }
                or None,
                cwd=expand(config.cwd, key=f"servers.{self.name}.cwd") if config.cwd else None,
            )
            pump = _StderrPump(self.name)
            stack.callback(pump.close)
            # Spawns are serialised so the child that appears is ours: the SDK does not expose its pid,
            # and we need its process group to clean up after it (see `run`).
            async with _spawn_lock():
                before = _session_leader_children()
                try:
                    streams = await stack.enter_async_context(stdio_client(params, errlog=pump.writer))
                except FileNotFoundError as exc:  # uvloop leaves the filename out
                    raise FileNotFoundError(exc.errno, exc.strerror, params.command) from exc
                new = _session_leader_children() - before
            if len(new) == 1:
                self.pgid = new.pop()
            return streams
        assert config.url is not None
        url = expand(config.url, key=f"servers.{self.name}.url")
        headers = {
            k: expand(v, key=f"servers.{self.name}.headers.{k}", environ=env)
            for k, v in config.headers.items()
        }
        oauth: credentials.ClientCredentials | None = None
        if config.oauth is not None:
            oauth = credentials.ClientCredentials(self.name, config.oauth, env or os.environ)
            stack.push_async_callback(oauth.aclose)
            await oauth.token()  # a bad client secret fails the start with the token endpoint's answer
        if config.kind == "sse":
            return await stack.enter_async_context(sse_client(url, headers=headers or None, auth=oauth))
        # One pooled HTTP client for the life of the session: no new TLS context per call.
        http = await stack.enter_async_context(_compat.mcp_http_client(headers=headers or None, auth=oauth))
        return await stack.enter_async_context(streamable_http_client(url, http_client=http))

    # --- lists -----------------------------------------------------------------------------------

    def _supports(self, kind: ListKind) -> bool:
        return _CAPABILITY_OF[kind] in self.capabilities

    async def _refresh_all(self, session: ClientSession) -> None:
        async with anyio.create_task_group() as tg:
            for kind in _LIST_METHODS:
                if self._supports(kind):
                    tg.start_soon(self._refresh, session, kind)

    async def _refresh(self, session: ClientSession, kind: ListKind) -> None:
        method, key = _LIST_METHODS[kind]
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params = {"cursor": cursor} if cursor else None
            try:
                # Listing is bounded like start-up, not like a call: a short per-call timeout
                # must not keep a slow-to-list server out of the catalog.
                page = await self._send(
                    session, method, params, timeout=max(self.timeout, self.startup_timeout)
                )
            except UpstreamError as exc:
                if kind != "tools" and isinstance(exc.__cause__, MCPError):
                    # A server that advertises a capability but lacks one list method is tolerated.
                    logger.warning("upstream %s: %s failed: %s", self.name, method, exc)
                    break
                raise
            items.extend(page.get(key) or [])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        self.lists[kind] = items

    async def refresh(self, kinds: tuple[ListKind, ...]) -> None:
        session = self._session
        if session is None:
            return
        for kind in kinds:
            if self._supports(kind):
                await self._refresh(session, kind)
        if self.on_change is not None:
            await self.on_change(self, kinds)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            logger.warning("upstream %s sent an unreadable message: %s", self.name, message)
            return
        method = getattr(message, "method", None)
        # A 2026-07-28 upstream's updates arrive on the watch's listen stream (see `_watch_resources`).
        if (
            method == "notifications/resources/updated"
            and self.on_resource_updated
            and self.era != "stateless"
        ):
            uri = getattr(getattr(message, "params", None), "uri", None)
            if uri is not None:
                await self.on_resource_updated(self.name, str(uri))
            return
        if method == "notifications/message" and self.on_log is not None:
            params = getattr(message, "params", None)
            await self.on_log(
                self.name, params.model_dump(by_alias=True, exclude_none=True) if params else {}
            )
            return
        kinds = _CHANGED.get(method or "")
        if kinds and self._task_group is not None:
            # Re-list off the session's receive loop: a request awaited here would deadlock it.
            self._task_group.start_soon(self._refresh_quietly, kinds)

    async def _listen(self, session: ClientSession) -> None:
        """A 2026-07-28 upstream announces list changes only on a `subscriptions/listen` stream."""
        changing = {k: bool((self.capabilities.get(k) or {}).get("listChanged")) for k in _LISTEN_KINDS}
        if not any(changing.values()):
            return
        try:
            async with listen(
                session,
                tools_list_changed=changing["tools"],
                resources_list_changed=changing["resources"],
                prompts_list_changed=changing["prompts"],
            ) as subscription:
                async for event in subscription:
                    kinds = _EVENT_KINDS.get(type(event))
                    if kinds:
                        await self._refresh_quietly(kinds)
        except (MCPError, SubscriptionLost, ListenNotSupportedError, TimeoutError) as exc:
            logger.warning("upstream %s: list changes will not be seen: %s", self.name, describe(exc))

    async def watch(self, uri: str) -> None:
        """Ask the upstream to say when `uri` changes (`resources/subscribe`, or its listen stream)."""
        if self.state == "starting":
            await self._settled.wait()  # its era is known once it has started
        if self.era != "stateless":
            await self.request("resources/subscribe", {"uri": uri})
            self._watched.add(uri)
            return
        if self._session is None or self._task_group is None:
            raise UpstreamUnavailable(self.name, f"not connected ({self.state})")
        self._watched.add(uri)
        self._restart_watch()

    async def unwatch(self, uri: str) -> None:
        self._watched.discard(uri)
        if self.era != "stateless":
            await self.request("resources/unsubscribe", {"uri": uri})
            return
        self._restart_watch()

    async def _rewatch(self) -> None:
        """After a restart: the new session is asked again for what clients still watch."""
        if self.era == "stateless":
            self._restart_watch()
            return
        for uri in sorted(self._watched):
            try:
                await self.request("resources/subscribe", {"uri": uri})
            except UpstreamError as exc:
                logger.warning("upstream %s: %s is no longer watched: %s", self.name, uri, exc)

    def _restart_watch(self) -> None:
        """One listen stream carries every watched URI; a changed set means a new stream."""
        if self._watch_scope is not None:
            self._watch_scope.cancel()
            self._watch_scope = None
        if self._watched and self._session is not None and self._task_group is not None:
            self._watch_scope = anyio.CancelScope()
            self._task_group.start_soon(
                self._watch_resources, self._session, self._watch_scope, sorted(self._watched)
            )

    async def _watch_resources(
        self, session: ClientSession, scope: anyio.CancelScope, uris: list[str]
    ) -> None:
        with scope:
            try:
                async with listen(session, resource_subscriptions=uris) as subscription:
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated) and self.on_resource_updated is not None:
                            await self.on_resource_updated(self.name, event.uri)
            except (MCPError, SubscriptionLost, ListenNotSupportedError, TimeoutError) as exc:
                logger.warning("upstream %s: resource updates will not be seen: %s", self.name, describe(exc))

    async def _refresh_quietly(self, kinds: tuple[ListKind, ...]) -> None:
        try:
            await self.refresh(kinds)
        except UpstreamError as exc:
            logger.warning("upstream %s: refreshing %s failed: %s", self.name, ", ".join(kinds), exc)

    async def _list_roots(self, ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(
            roots=[types.Root.model_validate({"uri": as_uri(r)}) for r in self.roots]
        )

    async def _sample(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        assert self.on_sampling is not None
        answer = await self._answer(self.on_sampling, params)
        if isinstance(answer, types.ErrorData):
            return answer
        if params.tools or isinstance(answer.get("content"), list):
            return types.CreateMessageResultWithTools.model_validate(answer)
        return types.CreateMessageResult.model_validate(answer)

    async def _elicit(
        self, context: Any, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        assert self.on_elicitation is not None
        answer = await self._answer(self.on_elicitation, params)
        return answer if isinstance(answer, types.ErrorData) else types.ElicitResult.model_validate(answer)

    async def _answer(self, answer: InputAnswer, params: Any) -> dict[str, Any] | types.ErrorData:
        """Run a handler for a request the upstream sent us; its failures become JSON-RPC errors for it."""
        try:
            return await answer(self.name, params.model_dump(by_alias=True, exclude_none=True, mode="json"))
        except GatewayError as exc:
            return types.ErrorData(code=exc.jsonrpc_code, message=str(exc))
        except MCPError as exc:  # the client we relayed to refused
            return exc.error
        except ValidationError as exc:
            return types.ErrorData(
                code=types.INTERNAL_ERROR, message=f"invalid answer: {exc.error_count()} problems"
            )

    # --- requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float | None = None,
        on_progress: ProgressRelay | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the raw result dict (waiting for a still-starting upstream)."""
        if self.state == "starting":
            await self._settled.wait()
        session = self._session
        if session is None or self.state != "ready":
            reason = f": {self.error}" if self.error else ""
            raise UpstreamUnavailable(self.name, f"not connected ({self.state}){reason}")
        timeout = timeout or self.timeout
        slots = self._slots
        if slots.available_tokens == 0:
            return await self._queued(slots, session, method, params, timeout, on_progress)
        async with slots:
            return await self._send(session, method, params, timeout=timeout, on_progress=on_progress)

    async def _queued(
        self,
        slots: anyio.CapacityLimiter,
        session: ClientSession,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        on_progress: ProgressRelay | None,
    ) -> dict[str, Any]:
        """Wait for a free call slot within the call's own timeout, then send with what time is left."""
        began = anyio.current_time()
        with anyio.move_on_after(timeout) as waiting:
            await slots.acquire()
        if waiting.cancelled_caught:  # never got a slot (one got at the deadline is held, and used)
            raise UpstreamTimeout(
                self.name,
                f"{method} waited {timeout:g}s for one of its {self.max_concurrent} call slots "
                "(max_concurrent) and was not sent",
            )
        try:
            left = max(timeout - (anyio.current_time() - began), 0.001)
            return await self._send(session, method, params, timeout=left, on_progress=on_progress)
        finally:
            slots.release()

    async def _send(
        self,
        session: ClientSession,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float,
        on_progress: ProgressRelay | None = None,
    ) -> dict[str, Any]:
        request: types.Request[Any, Any] = types.Request[dict[str, Any], str](
            method=method, params=params or {}
        )
        try:
            result: dict[str, Any] = await session.send_request(  # type: ignore[type-var]
                request,
                _RAW,
                request_read_timeout_seconds=timeout,
                progress_callback=cast(ProgressFnT, on_progress),
            )
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                raise UpstreamTimeout(self.name, f"{method} timed out after {timeout:g}s") from exc
            if exc.code == types.CONNECTION_CLOSED:
                self._fail("connection closed")
                raise UpstreamUnavailable(self.name, "connection closed") from exc
            raise UpstreamReplyError(self.name, exc.error) from exc
        except ValidationError as exc:
            raise UpstreamError(
                self.name, f"sent an invalid {method} result: {exc.error_count()} problems"
            ) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            self._fail("connection closed")
            raise UpstreamUnavailable(self.name, "connection closed") from exc
        if method not in ("ping", "server/discover") and _content_size(result) > self.max_result_bytes:
            raise UpstreamError(
                self.name,
                f"{method} returned more than {self.max_result_bytes} bytes of content "
                "([gateway] max_result_bytes); the result was dropped",
            )
        meta = result.get("_meta")
        if isinstance(meta, dict) and any(k.startswith(_RESERVED_META_PREFIX) for k in meta):
            # The upstream's own protocol stamps (its serverInfo) describe the upstream hop;
            # the client is talking to mcpgw, which stamps its own.
            kept = {k: v for k, v in meta.items() if not k.startswith(_RESERVED_META_PREFIX)}
            if kept:
                result["_meta"] = kept
            else:
                del result["_meta"]
        return result


@dataclass(frozen=True)
class Hooks:
    """What an upstream tells the gateway that owns it (all optional: the CLI's checks need none)."""

    on_change: Callable[[Upstream, tuple[ListKind, ...]], Coroutine[Any, Any, None]] | None = None
    on_state: Callable[[Upstream], None] | None = None
    on_log: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    on_resource_updated: Callable[[str, str], Awaitable[None]] | None = None
    on_sampling: InputAnswer | None = None
    on_elicitation: InputAnswer | None = None


def for_server(
    name: str,
    server: ServerConfig,
    registry: Registry,
    *,
    secrets: Mapping[str, str] | None = None,
    hooks: Hooks | None = None,
    restart: bool | None = None,
    in_process: Any = None,
) -> Upstream:
    """The one way an `Upstream` is made from the registry: its limits, timeouts and hooks.

    `restart`: None follows the server's own `restart`; the CLI's one-shot checks pass False.
    """
    settings = registry.gateway
    hooks = hooks or Hooks()
    return Upstream(
        name=name,
        config=server,
        timeout=call_timeout(registry, server),
        startup_timeout=settings.startup_timeout,
        roots=list(server.roots),
        restart=server.restart if restart is None else restart,
        backoff_max=settings.restart_backoff_max,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_concurrent=server.max_concurrent or settings.max_concurrent,
        max_result_bytes=settings.max_result_bytes,
        secrets=dict(secrets or {}),
        on_change=hooks.on_change,
        on_state=hooks.on_state,
        on_log=hooks.on_log,
        on_resource_updated=hooks.on_resource_updated,
        on_sampling=hooks.on_sampling,
        on_elicitation=hooks.on_elicitation,
        in_process=in_process,
    )


class UpstreamReplyError(UpstreamError):
    """The upstream answered with a JSON-RPC error; relayed downstream with its own code."""

    def __init__(self, server: str, error: types.ErrorData) -> None:
        super().__init__(server, error.message)
        self.error = error
        self.jsonrpc_code = error.code  # type: ignore[misc]


def _content_size(result: dict[str, Any]) -> int:
    """Characters of text and base64 data a result carries: cheap to count, and what makes results large."""
    size = 0
    for key in ("content", "contents", "messages"):
        items = result.get(key)
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict):
                continue
            for part in (item, item.get("resource"), item.get("content")):
                if isinstance(part, dict):
                    size += sum(len(v) for k in ("text", "data", "blob") if isinstance(v := part.get(k), str))
    return size


def describe(exc: BaseException) -> str:
    """A one-line reason for a failure, looking through exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return exc.error.message
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def as_uri(root: str) -> str:
    if "://" in root:
        return root
    return Path(root).expanduser().resolve().as_uri()
