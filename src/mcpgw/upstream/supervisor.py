"""Keeping one upstream running: its lives, its state, and restarting it when it fails.

Owns: the owner task (`run`) that starts the upstream (transport, session,
lists) within its start-up timeout, in the protocol era that worked in its last
life (an `auto` upstream whose probe fails without an answer is connected again
at once with `initialize` alone), serves until it fails or is stopped, and
restarts it with exponential backoff and jitter; noticing failure between calls
(a stdio child that exited, an upstream that stops answering pings); the
upstream's state, told to `on_state` at every change; and cleaning up after
each life, down to the stdio child's whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Literal

import anyio
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError

from mcpgw.config import Era
from mcpgw.errors import ConfigError, UpstreamError, UpstreamTimeout
from mcpgw.observe.logs import counted
from mcpgw.upstream.lists import ALL_LISTS, Lists, OnChange
from mcpgw.upstream.session import ProbeFailed, Session, UpstreamReplyError, describe
from mcpgw.upstream.transports import Transport, alive, kill_process_group
from mcpgw.upstream.watch import ResourceWatches

logger = logging.getLogger("mcpgw.upstream")

State = Literal["starting", "ready", "failed", "restarting", "stopped", "disabled"]

RESTART_BASE = 0.5
"""Seconds before the first restart; doubled per failure (with jitter) up to `backoff_max`."""
RESTART_RESET_AFTER = 30.0
PROCESS_POLL = 0.25
CLOCK_SLACK = 0.01
"""Seconds a loop timer may fire before its deadline (uvloop's clock has millisecond steps)."""


class Supervisor:
    """The owner of one upstream's lives."""

    def __init__(
        self,
        name: str,
        *,
        transport: Transport,
        session: Session,
        lists: Lists,
        watches: ResourceWatches,
        startup_timeout: float,
        restart: bool,
        backoff_max: float,
        ping_interval: float,
        ping_timeout: float,
        on_state: Callable[[], None] | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.name = name
        self._transport = transport
        self._session = session
        self._lists = lists
        self._watches = watches
        self.startup_timeout = startup_timeout
        self.restart = restart
        self.backoff_max = backoff_max
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._on_state = on_state
        self._on_change = on_change

        self.state: State = "starting"
        self.served = False
        """It has been ready at least once (its lists were in)."""
        self.error: str | None = None
        self._wakeup = anyio.Event()
        self._stopping = False
        self._settled = anyio.Event()
        self._asked_restart = False
        self.known_era: Era | None = None
        """The era an `auto` upstream's next life uses: the one its last life settled on, or
        `handshake` after a probe that was cut off by the start-up timeout. Kept in memory only: a
        server upgraded between gateway runs is probed afresh, and nothing is written anywhere."""

    async def wait_settled(self) -> None:
        """Wait until the first start has ended: ready, or failed."""
        await self._settled.wait()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self, *, now: bool = False) -> None:
        """End the upstream's life; `now`: its child's process group goes at once (`Transport.hurry`)."""
        self._stopping = True
        if now:
            self._transport.hurry()
        self._wakeup.set()

    async def run(self) -> None:
        """Owner task: run the upstream until `stop()`, restarting it with backoff when it fails."""
        attempt = 0
        while True:
            began = anyio.current_time()
            await self._run_once()
            asked, self._asked_restart = self._asked_restart, False
            if self._stopping or not (self.restart or asked) or self.state != "failed":
                return
            if anyio.current_time() - began > RESTART_RESET_AFTER or asked:
                attempt = 0  # it ran well for a while (or a person asked): start the backoff over
            delay = (
                0.0 if asked else min(self.backoff_max, RESTART_BASE * 2**attempt) * random.uniform(0.5, 1.0)
            )
            attempt += 1
            logger.info("upstream %s: restarting in %.1fs (attempt %d)", self.name, delay, attempt)
            self._wakeup = anyio.Event()
            with anyio.move_on_after(delay):
                await self._wakeup.wait()  # `stop()` ends the wait
            if self._stopping:
                return
            self.state = "restarting"
            self._transport.pgid = None
            self._tell_state()

    async def _watch_process(self) -> None:
        """A stdio child that exits is noticed at once, not at the next call."""
        while self._transport.pgid is not None and self.state == "ready":
            if not alive(self._transport.pgid):
                self.fail("the process exited")
                return
            await anyio.sleep(PROCESS_POLL)

    async def _ping(self, client: ClientSession) -> None:
        """A cheap periodic `ping`: an HTTP upstream gone away, or a hung child, is noticed and restarted."""
        # 2026-07-28 has no `ping`; `server/discover` is its cheapest request.
        method = "server/discover" if self._session.era == "stateless" else "ping"
        while self.state == "ready":
            await anyio.sleep(self.ping_interval)
            try:
                await self._session.send(client, method, None, timeout=self.ping_timeout)
            except UpstreamReplyError:
                continue  # it answered, if only with an error: it is alive
            except UpstreamTimeout as exc:
                # A server busy with a call (mcp-server-fetch blocks its loop while it extracts a page)
                # misses pings and is healthy: never fail it, and its calls, while calls are in flight or
                # answers keep coming. Each call has its own timeout; a hung idle server is still caught.
                if self._session.busy(within=self.ping_interval + self.ping_timeout):
                    continue
                if self.state == "ready":
                    self.fail(f"did not answer a ping ({exc.reason})")
                return
            except UpstreamError as exc:
                if self.state == "ready":
                    self.fail(f"did not answer a ping ({exc.reason})")
                return

    async def _run_once(self) -> None:
        """One life of the upstream: connect, list, serve; failures are recorded, not raised."""
        became_ready = False
        failure: str | None = None
        session = self._session
        try:
            # One scope around the whole exit stack: the transport's task groups are entered inside
            # it and must be exited inside it too. Its deadline bounds start-up only.
            with anyio.CancelScope(deadline=anyio.current_time() + self.startup_timeout) as startup:
                async with AsyncExitStack() as stack:
                    client = await self._connect(stack)
                    await self._lists.refresh_all(client)
                    startup.deadline = math.inf
                    session.client = client
                    became_ready = self.served = True
                    self.state = "ready"
                    self.error = None
                    self._tell_state()
                    self._settled.set()
                    logger.info(
                        "upstream %s ready (%s, protocol %s, %s)",
                        self.name,
                        self._transport.config.kind,
                        session.protocol_version,
                        counted(len(self._lists.items["tools"]), "tool"),
                    )
                    async with anyio.create_task_group() as tg:
                        session.tasks = tg
                        if self._on_change is not None:
                            tg.start_soon(self._on_change, ALL_LISTS)
                        tg.start_soon(self._watch_process)
                        if self.ping_interval > 0:
                            tg.start_soon(self._ping, client)
                        if session.era == "stateless":
                            tg.start_soon(self._lists.listen, client)
                        if self._watches.watched:
                            tg.start_soon(self._watches.rewatch)
                        await self._wakeup.wait()
                        tg.cancel_scope.cancel()
            if startup.cancelled_caught and self.state in ("starting", "restarting"):
                raise TimeoutError
        except TimeoutError:
            failure = f"did not start within {self.startup_timeout:g}s"
        except ConfigError as exc:
            failure = str(exc)
        except Exception as exc:
            failure = describe(exc)
        finally:
            session.client = None
            if self._transport.pgid is not None:
                # The SDK kills the group only when the child outlives stdin EOF; grandchildren of a
                # child that exited on its own would survive, so the whole group goes here.
                kill_process_group(self._transport.pgid)
            if failure is not None:
                if not became_ready:
                    # "Connection closed" says nothing; the child's last words usually say why.
                    tail = await self._transport.stderr_tail()
                    if tail:
                        failure += "\n  stderr: " + "\n  stderr: ".join(tail)
                self.fail(failure)
            elif self.state == "ready":
                self.state = "stopped"
                self._tell_state()
            self._settled.set()
            # Only an attempt that served had names in the catalog; a failed restart changes nothing.
            if became_ready and not self._stopping and self._on_change is not None:
                # It died on its own: its names leave the catalog, and clients are told.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self._on_change(ALL_LISTS)

    async def _connect(self, stack: AsyncExitStack) -> ClientSession:
        """The upstream's session, entered on `stack`, in the era it is known to speak, else as configured."""
        configured = self._transport.config.era
        era = self.known_era if configured == "auto" and self.known_era else configured
        if era != "auto":
            try:
                return await self._open(stack, era)
            except MCPError:
                # The server answered no to what worked before (upgraded?): the next life probes again.
                # An outage or a timeout says nothing about its era, and keeps it.
                self.known_era = None if configured == "auto" else self.known_era
                raise
        attempt, deadline = AsyncExitStack(), anyio.current_effective_deadline()
        try:
            client = await self._open(attempt, "auto")
        except ProbeFailed as exc:
            await attempt.aclose()
            if self._transport.pgid is not None:
                kill_process_group(self._transport.pgid)  # a crashed child's own children too
            failed = exc.reason
        except anyio.get_cancelled_exc_class():
            # The start-up timeout cut the probe off: the next life tries `initialize` alone. Not a
            # stop, nor a transport that failed (a server not up yet: its task group cancels the probe),
            # which say nothing of its era: a server started after the gateway is met in its own.
            if anyio.current_time() >= deadline - CLOCK_SLACK:
                self.known_era = "handshake"
            await attempt.aclose()
            raise
        except BaseException:
            await attempt.aclose()
            raise
        else:
            stack.push_async_exit(attempt)
            self.known_era = "stateless" if self._session.era == "stateless" else "handshake"
            return client
        logger.warning(
            "upstream %s: the server/discover probe failed (%s); connecting again with initialize "
            '(set era = "handshake" to skip the probe)',
            self.name,
            failed,
        )
        client = await self._open(stack, "handshake")
        self.known_era = "handshake"
        return client

    async def _open(self, stack: AsyncExitStack, era: Era) -> ClientSession:
        streams = await self._transport.open(stack)
        return await self._session.connect(stack, streams, era=era, wire=self._transport.wire)

    def restart_now(self, reason: str) -> bool:
        """End this life and start the next at once (a person asked, in the console), even with
        `restart = false`; a failed upstream waiting out its backoff starts at once. False (and
        nothing done) while it is starting or stopping: that life is not to be cut short."""
        if self._stopping or self.state not in ("ready", "failed"):
            return False
        self._asked_restart = True
        if self.state == "failed":
            self._wakeup.set()
        else:
            self.fail(reason)
        return True

    def fail(self, message: str) -> None:
        """Record that the upstream failed and end its current life (`run` restarts it if it should)."""
        if self._stopping and self.state == "ready":
            return  # stopped on purpose: the requests its closing connection cuts off are no failure
        if self.state == "ready":
            logger.error("upstream %s failed: %s", self.name, message)
        else:
            logger.error("upstream %s failed to start: %s", self.name, message)
        self.state = "failed"
        self.error = message
        self._tell_state()
        self._wakeup.set()

    def _tell_state(self) -> None:
        if self._on_state is not None:
            self._on_state()
