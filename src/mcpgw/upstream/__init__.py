"""Upstream MCP servers: one supervised, shared session each, the transports that reach them,
their credentials, and the registry of calls in flight on each.

Owns: `Upstream`, what the rest of mcpgw holds for one upstream server, made
only by `for_server` (with the gateway's `Hooks`). An `Upstream` is composed of
one part per job, each in its own module:

- `transports`: the streams to the upstream (stdio child, HTTP, SSE, in-process);
- `reaper`: the watchdog that stops stdio children's process groups if the gateway is killed;
- `session`: the shared `ClientSession`, its era, requests, and the error boundary;
- `answers`: requests the upstream sends mcpgw (roots, sampling, elicitation);
- `lists`: its tools, resources, templates and prompts, kept up to date;
- `watch`: the resources clients watch on it;
- `supervisor`: its lives and state, restarts, pings and the child process;
- `companion`: a second, handshake-era session for handshake-era callers of an
  upstream that speaks both eras (HTTP and in-process upstreams).

Here it only wires them together, routes the session's notifications to the
part that keeps them, holds back requests until the upstream is ready, and
resends a `tools/call` the upstream refused for stale `Mcp-Param-*` headers
once the tools are listed again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types

from mcpgw.config import Registry, ServerConfig, call_timeout
from mcpgw.errors import UpstreamError, UpstreamUnavailable
from mcpgw.observe import context as observe_context
from mcpgw.upstream import tokens
from mcpgw.upstream.answers import Answers, ElicitationAnswer, SamplingAnswer
from mcpgw.upstream.companion import Companion
from mcpgw.upstream.lists import ListKind, Lists
from mcpgw.upstream.session import ProgressRelay, Session, UpstreamReplyError, without_capabilities
from mcpgw.upstream.supervisor import State, Supervisor
from mcpgw.upstream.transports import Transport
from mcpgw.upstream.watch import ResourceWatches

logger = logging.getLogger("mcpgw.upstream")


@dataclass(frozen=True)
class Hooks:
    """What an upstream tells the gateway that owns it (all optional: the CLI's checks need none)."""

    on_change: Callable[[Upstream, tuple[ListKind, ...]], Coroutine[Any, Any, None]] | None = None
    on_state: Callable[[Upstream], None] | None = None
    """Told of every state change (ready, failed, stopped): the audit log records them."""
    on_log: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    """Told of every `notifications/message` the upstream sends (its name and the params)."""
    on_resource_updated: Callable[[str, str], Awaitable[None]] | None = None
    """Told (upstream name, upstream URI) when a watched resource changed."""
    on_sampling: SamplingAnswer | None = None
    """Answers the upstream's `sampling/createMessage`; when set, mcpgw declares sampling to it."""
    on_elicitation: ElicitationAnswer | None = None
    """Answers the upstream's `elicitation/create`; when set, mcpgw declares elicitation to it."""


class Upstream:
    """One upstream server and its kept-alive session."""

    def __init__(
        self,
        name: str,
        config: ServerConfig,
        *,
        timeout: float,
        startup_timeout: float = 30.0,
        roots: Sequence[str] = (),
        restart: bool = True,
        backoff_max: float = 30.0,
        ping_interval: float = 0.0,
        ping_timeout: float = 10.0,
        max_concurrent: int = 64,
        max_result_bytes: int = 32 * 1024 * 1024,
        secrets: Mapping[str, str] | None = None,
        tokens_dir: Path | None = None,
        hooks: Hooks | None = None,
        in_process: Any = None,
        relogin: bool = False,
    ) -> None:
        self.name = name
        self.config = config
        self.timeout = timeout
        self._hooks = hooks = hooks or Hooks()
        self._transport = Transport(
            name,
            config,
            secrets=dict(secrets or {}),
            tokens_dir=tokens_dir,
            # A login found missing mid-call ends the connection: the calls it cuts off say why.
            on_refused=lambda reason: self._session.closing(reason),
            # A login due during a call is put to the caller's client, where its callers are its user.
            ask=partial(on_elicitation, name)
            if relogin and (on_elicitation := hooks.on_elicitation)
            else None,
            in_process=in_process,
            # A line is JSON: its escapes can make it longer than the content it carries, so the line
            # bound (memory and time, before parsing) leaves the content check its own limit to judge.
            max_line=max(2 * max_result_bytes, 1024 * 1024),
        )
        answers = Answers(
            name,
            roots=list(roots),
            on_sampling=hooks.on_sampling,
            on_elicitation=hooks.on_elicitation,
            apps=config.apps,
        )
        slots = anyio.CapacityLimiter(max_concurrent)  # one budget, whichever session a call takes
        self._session = Session(
            name,
            max_concurrent=max_concurrent,
            max_result_bytes=max_result_bytes,
            answers=answers,
            on_message=self._on_message,
            on_lost=self._lost,
            slots=slots,
        )
        self._companion = Companion(
            name,
            transport=self._transport,
            primary=self._session,
            make_session=lambda lost: Session(
                name,
                max_concurrent=max_concurrent,
                max_result_bytes=max_result_bytes,
                answers=answers,
                # Its notifications are the upstream's: its log lines, and the list changes a call
                # made on it announces there (a both-eras server tells each session in its own era).
                on_message=self._on_message,
                on_lost=lost,
                slots=slots,
            ),
            open_timeout=startup_timeout,
        )
        on_change = self._changed if hooks.on_change is not None else None
        self._lists = Lists(
            name,
            self._session,
            # Listing is bounded like start-up, not like a call (see `Lists`).
            timeout=max(timeout, startup_timeout),
            on_change=on_change,
        )
        self._watches = ResourceWatches(
            name,
            self._session,
            request=self.request,
            state=lambda: self.state,
            on_updated=hooks.on_resource_updated,
        )
        self._supervisor = Supervisor(
            name,
            transport=self._transport,
            session=self._session,
            lists=self._lists,
            watches=self._watches,
            startup_timeout=startup_timeout,
            restart=restart,
            backoff_max=backoff_max,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            on_state=self._state_changed if hooks.on_state is not None else None,
            on_change=on_change,
        )

    def __repr__(self) -> str:
        return f"Upstream(name={self.name!r}, state={self.state!r})"

    # --- what the gateway reads ------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._supervisor.state

    @property
    def error(self) -> str | None:
        return self._supervisor.error

    @property
    def served(self) -> bool:
        """It has been ready: its lists (as it last gave them) stand for it while it is down."""
        return self._supervisor.served

    @property
    def connected(self) -> bool:
        return self._session.client is not None

    @property
    def protocol_version(self) -> str | None:
        return self._session.protocol_version

    @property
    def era(self) -> str:
        return self._session.era

    @property
    def server_info(self) -> dict[str, Any] | None:
        return self._session.server_info

    @property
    def instructions(self) -> str | None:
        return self._session.instructions

    @property
    def capabilities(self) -> dict[str, Any]:
        return self._session.capabilities

    @property
    def slots(self) -> tuple[int, int]:
        """Calls in flight on it (holding one of its `max_concurrent` slots), and calls queued for one."""
        return self._session.slots

    @property
    def lists(self) -> dict[ListKind, list[dict[str, Any]]]:
        return self._lists.items

    @property
    def invalid_tools(self) -> dict[str, str]:
        """Tools left out of `lists` for invalid `x-mcp-header` annotations (2026-07-28), with the reason."""
        return self._session.invalid_tools

    # --- lifecycle (see `Supervisor`) ------------------------------------------------------------

    async def run(self) -> None:
        """Owner task: run the upstream until `stop()`, restarting it with backoff when it fails."""
        with observe_context.upstream(self.name):  # its own log lines name it
            await self._supervisor.run()

    def stop(self, *, now: bool = False, reason: str | None = None) -> None:
        """End the upstream; requests it cuts off fail with `reason` (default: "connection closed").

        `now` stops a stdio child's process group at once instead of waiting for it to leave.
        """
        if reason is not None:
            self._session.closing(reason)
            self._companion.session.closing(reason)
        self._supervisor.stop(now=now)

    def restart(self, reason: str) -> bool:
        """Stop this life and start the next at once; requests it cuts off fail with `reason`.
        False while it is starting or stopping (nothing is done)."""
        if self.state not in ("ready", "failed"):
            return False
        self._session.closing(reason)
        self._companion.session.closing(reason)
        return self._supervisor.restart_now(reason)

    def retune(self, config: ServerConfig, *, timeout: float) -> None:
        """A reload changed only what is read per call (timeouts, aliases, namespace): from now on."""
        self.config = config
        self.timeout = timeout

    @property
    def in_flight(self) -> int:
        """Requests sent to it and not yet answered."""
        return self._session.in_flight

    async def wait_settled(self) -> None:
        await self._supervisor.wait_settled()

    # --- requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float | None = None,
        on_progress: ProgressRelay | None = None,
        handshake_caller: bool = False,
    ) -> dict[str, Any]:
        """Send one request and return the raw result dict (waiting for a still-starting upstream).

        `handshake_caller`: the request comes from a handshake-era client; it goes to the upstream's
        handshake-era session when it has one to offer (`upstream.companion`).
        """
        state = self._supervisor.state
        if state == "starting":
            await self.wait_settled()
            state = self._supervisor.state
        client = self._session.client
        if client is None or state != "ready":
            raise self.unavailable()
        timeout = timeout or self.timeout
        if handshake_caller and self._companion.applies():
            handshake = await self._companion.client()
            if handshake is not None:
                # The caller's capabilities stamp is a 2026-07-28 request's; the handshake-era session
                # declared its own at `initialize`. (Kept when it falls back: the shared session reads it.)
                params = {**(params or {}), "_meta": without_capabilities((params or {}).get("_meta"))}
                if params["_meta"] is None:
                    del params["_meta"]
                session = self._companion.session
                return await session.request(
                    handshake, method, params, timeout=timeout, on_progress=on_progress
                )
        try:
            return await self._session.request(
                client, method, params, timeout=timeout, on_progress=on_progress
            )
        except UpstreamReplyError as mismatch:
            if (
                method != "tools/call"
                or mismatch.error.code != types.HEADER_MISMATCH
                or self.era != "stateless"
            ):
                raise
            # The spec's recovery, as the SDK's `Client.call_tool` has it: the upstream found the call's
            # `Mcp-Param-*` headers wrong for the tool's schema, so mcpgw's listing of it is stale. List
            # the tools again (the catalog follows) and send the call once more.
            logger.info("upstream %s: %s", self.name, mismatch.error.message)
            try:
                await self._lists.refresh(("tools",))
            except UpstreamError as relisting:
                raise mismatch from relisting
        return await self._session.request(client, method, params, timeout=timeout, on_progress=on_progress)

    def unavailable(self) -> UpstreamUnavailable:
        """The error a request it cannot take gets: its state, what comes next, and the last error."""
        return UpstreamUnavailable(self.name, self._down())

    def _down(self) -> str:
        """Why a request cannot be sent: its state, what comes next, and the last error."""
        state: str = self.state
        if state == "failed":  # waiting out the backoff before its restart, or for good
            again = self._supervisor.restart and not self._supervisor.stopping
            state = "failed, restarting" if again else "failed, not restarted"
        last = f"; last error: {self.error}" if self.error else ""
        return f"down ({state}{last})"

    async def watch(self, uri: str) -> None:
        """Ask the upstream to say when `uri` changes (`resources/subscribe`, or its listen stream)."""
        if self.state == "starting":
            await self.wait_settled()  # its era is known once it has started
        await self._watches.watch(uri)

    async def unwatch(self, uri: str) -> None:
        await self._watches.unwatch(uri)

    # --- what the parts tell each other and the gateway ------------------------------------------

    async def _on_message(self, message: Any) -> None:
        """A notification (or an unreadable message) the upstream sent on the session."""
        if isinstance(message, Exception):
            logger.warning("upstream %s sent an unreadable message: %s", self.name, message)
            return
        method = getattr(message, "method", None)
        on_resource_updated, on_log = self._hooks.on_resource_updated, self._hooks.on_log
        # A 2026-07-28 upstream's updates arrive on the watch's listen stream (see `ResourceWatches`).
        if method == "notifications/resources/updated" and on_resource_updated and self.era != "stateless":
            uri = getattr(getattr(message, "params", None), "uri", None)
            if uri is not None:
                await on_resource_updated(self.name, str(uri))
            return
        if method == "notifications/message" and on_log is not None:
            params = getattr(message, "params", None)
            await on_log(self.name, params.model_dump(by_alias=True, exclude_none=True) if params else {})
            return
        self._lists.notified(method)

    async def relist(self, kinds: tuple[ListKind, ...]) -> None:
        """List `kinds` again, as a `list_changed` notification has it (another replica saw one)."""
        await self._lists._refresh_quietly(kinds)

    def serves_handshake_callers(self) -> bool:
        """Whether a handshake-era caller's requests go to a handshake-era session (`upstream.companion`)."""
        return self._companion.applies()

    def _lost(self, reason: str) -> None:
        self._supervisor.fail(reason)

    async def _changed(self, kinds: tuple[ListKind, ...]) -> None:
        assert self._hooks.on_change is not None
        await self._hooks.on_change(self, kinds)

    def _state_changed(self) -> None:
        assert self._hooks.on_state is not None
        self._hooks.on_state(self)


def for_server(
    name: str,
    server: ServerConfig,
    registry: Registry,
    *,
    secrets: Mapping[str, str] | None = None,
    hooks: Hooks | None = None,
    restart: bool | None = None,
    in_process: Any = None,
    tokens_dir: Path | None = None,
) -> Upstream:
    """The one way an `Upstream` is made from the registry: its limits, timeouts and hooks.

    `restart`: None follows the server's own `restart`; the CLI's one-shot checks pass False.
    `tokens_dir`: where its login is (default: `mcpgw login`'s folder; a per-user session's own).
    """
    settings = registry.gateway
    return Upstream(
        name,
        server,
        timeout=call_timeout(registry, server),
        startup_timeout=settings.startup_timeout,
        roots=list(server.roots),
        restart=server.restart if restart is None else restart,
        backoff_max=settings.restart_backoff_max,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_concurrent=server.max_concurrent or settings.max_concurrent,
        max_result_bytes=settings.max_result_bytes,
        secrets=secrets,
        tokens_dir=tokens_dir or tokens.tokens_dir(settings),
        relogin=registry.auth is None,  # with [auth], any caller could log mcpgw's login in as itself
        hooks=hooks,
        in_process=in_process,
    )
