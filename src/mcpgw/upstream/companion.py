"""A second, handshake-era session to an upstream that speaks both eras, for handshake-era callers.

Owns: deciding whether a handshake-era caller's request goes to a handshake-era
session instead of the upstream's shared 2026-07-28 one, opening that session on
demand within the upstream's current life, and dropping it when it fails (the next
such request opens it again).

Why: a server that offers both eras may behave differently on each. The official
conformance reference serves sampling and elicitation on its handshake path only
(its stateless path answers "not supported"), so a 2025-11-25 client connected
directly gets its question and, through a gateway that speaks 2026-07-28 upstream,
would not. A handshake-era caller therefore gets the upstream's handshake-era
behaviour, as if it had connected directly.

Which upstreams: HTTP and in-process ones, whose second session is one more
session on the same server (the same state, a few requests to open). Never a
stdio upstream: its second session would be a second process, a second instance
of the server whose state (a memory server's graph, a browser, open files) is not
the first one's, which changes more than the era; its handshake-era callers keep
the era bridge (the upstream's `input_required` requests relayed to them). Never
an upstream pinned to `era = "stateless"` (the registry said which era to speak).
The catalog, pins, personas and the audit log are the shared session's: the
second one only carries requests, within the same call slots, and the questions
it asks reach the same `Answers` as the first's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
from mcp.client.session import ClientSession

from mcpgw.config import OpenApiServer, StdioServer
from mcpgw.upstream.session import Session, describe
from mcpgw.upstream.transports import Transport

logger = logging.getLogger("mcpgw.upstream")


class Companion:
    """The handshake-era session of one upstream, opened when a handshake-era caller first needs it."""

    def __init__(
        self,
        name: str,
        *,
        transport: Transport,
        primary: Session,
        make_session: Callable[[Callable[[str], None]], Session],
        open_timeout: float,
    ) -> None:
        self.name = name
        self._transport = transport
        self._primary = primary
        self._session = make_session(self._lost)
        self._open_timeout = open_timeout
        self._client: ClientSession | None = None
        self._life: Any = None
        """The primary's task group the companion was opened in: a new life opens it afresh."""
        self._refused: Any = None
        """The life in which opening it failed: not tried again until the upstream's next life."""
        self._opening: anyio.Event | None = None
        self._closed = anyio.Event()

    def applies(self) -> bool:
        """Whether handshake-era callers' requests should go to a handshake-era session."""
        primary = self._primary
        if primary.era != "stateless" or primary.client is None:
            return False
        config = self._transport.config
        if config.era != "auto" or (isinstance(config, StdioServer) and self._transport.in_process is None):
            return False
        if isinstance(config, OpenApiServer):
            return False
        # `server/discover` lists only 2026-07-28 versions (the handshake era is negotiated by
        # `initialize`), so whether the server speaks the handshake era too is learnt by asking it
        # once per life: a server that refuses is not asked again until it restarts.
        return self._refused is None or self._refused is not primary.tasks

    @property
    def session(self) -> Session:
        return self._session

    async def client(self) -> ClientSession | None:
        """The open handshake-era session (opening it if need be); None: use the shared session."""
        life = self._primary.tasks
        if self._client is not None and self._life is life:
            return self._client
        if life is None:
            return None
        if self._opening is None:
            self._opening = anyio.Event()
            self._closed = anyio.Event()
            life.start_soon(self._hold, life, self._opening)
        opening = self._opening
        with anyio.move_on_after(self._open_timeout):
            await opening.wait()
        return self._client if self._life is life else None

    async def _hold(self, life: Any, opened: anyio.Event) -> None:
        """Open the session and keep it until the upstream's life ends or the session is lost."""
        try:
            # One scope around the whole exit stack (the transport's task groups are entered and
            # exited inside it); its deadline bounds the opening only.
            with anyio.CancelScope(deadline=anyio.current_time() + self._open_timeout) as opening:
                async with AsyncExitStack() as stack:
                    streams = await self._transport.open(stack)
                    client = await self._session.connect(stack, streams, era="handshake")
                    opening.deadline = math.inf
                    self._client, self._life = client, life
                    logger.info(
                        "upstream %s: handshake-era session opened (protocol %s) for handshake-era clients",
                        self.name,
                        self._session.protocol_version,
                    )
                    opened.set()
                    await self._closed.wait()
            if opening.cancelled_caught:
                raise TimeoutError(f"not open within {self._open_timeout:g}s")
        except Exception as exc:
            self._refused = life
            # Expected of a 2026-only server (it refuses `initialize`): not a problem to warn of.
            logger.info(
                "upstream %s: no handshake-era session (%s); handshake-era clients use the era bridge",
                self.name,
                describe(exc),
            )
        finally:
            self._client = None
            self._opening = None
            opened.set()

    def _lost(self, reason: str) -> None:
        """The handshake-era session's connection closed: drop it (the shared session decides the rest)."""
        logger.info("upstream %s: handshake-era session lost (%s)", self.name, reason)
        self._client = None
        self._closed.set()
