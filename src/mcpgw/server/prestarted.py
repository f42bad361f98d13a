"""The full stdio server taking over from the pre-server, and saving the answers the next one gives.

Owns: `EarlyStart`, which (1) hands the lines the pre-server read (`prestart.preserver`) to the
server as if they came from stdin now, so every message is served once, in order, audited as
usual; (2) drops the server's own answers to the requests the pre-server already answered, and
when such a list answer differs from the early one, announces `list_changed` for it; (3) watches
the opening requests and their answers, and saves them (`prestart.answers`) once every upstream
has settled; a list only if every upstream has served and the catalog it was answered from is the
one the gateway settled on (the one `core.memory` then remembers), so the next start answers
exactly what this one would.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from mcpgw.catalog import Catalog
from mcpgw.core.gateway import Gateway
from mcpgw.core.memory import memory_path
from mcpgw.prestart import answers as saved
from mcpgw.prestart import preserver
from mcpgw.upstream import credentials
from mcpgw.upstream.lists import ALL_LISTS

logger = logging.getLogger("mcpgw.prestart")

_CHANGED_BY = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "prompts/list": "prompts",
}
_ANSWER = b'{"jsonrpc":"2.0","id":'
"""How the server's messages begin when they carry an id: most lines are told apart by it alone."""


class EarlyStart:
    """The pre-server's handover and the saving of answers, for one stdio connection."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        path: str,
        files: list[str],
        memory: str,
        persona: str | None,
        announce: Callable[[set[str]], Awaitable[None]],
        handed: preserver.Handover | None,
    ) -> None:
        self._gateway = gateway
        self._path, self._files, self._memory = path, files, memory
        self._persona = persona
        self._static = saved.static_digest(files, persona)
        self._announce = announce
        self.replay = handed.consumed if handed is not None else b""
        """The bytes the pre-server read: stdin's first."""
        self._early = dict(handed.answered) if handed is not None else {}
        self._session: Any = None
        self._asked: dict[str, tuple[str, str]] = {}
        """Opening requests awaiting their answer: canonical id -> (method, key)."""
        self._seen: set[str] = set()
        self._got: list[tuple[str, Any, Catalog | None]] = []
        self._changed: set[str] = set()
        self._settled: Catalog | None = None
        self._wake = anyio.Event()
        if handed is not None and handed.notes:
            logger.debug("answered before the mcp SDK was loaded: %s", "; ".join(handed.notes))

    @classmethod
    def for_stdio(
        cls,
        gateway: Gateway,
        persona: str | None,
        *,
        registry_path: Path | None,
        announce: Callable[[set[str]], Awaitable[None]],
    ) -> EarlyStart | None:
        """Take over from the pre-server; None when there is none and nothing is to be saved."""
        handed = preserver.handover()
        registry = gateway.registry
        if registry_path is None or not registry.gateway.remember_catalog:
            if handed is None:
                return None
            # It cannot have answered for such a registry (nothing was saved for it): its lines are
            # still the server's to read, and nothing is saved.
            return cls(
                gateway,
                path=handed.path,
                files=[],
                memory="",
                persona=persona,
                announce=announce,
                handed=handed,
            )
        files = [str(registry_path.resolve())]
        if gateway.trust is not None:
            files.append(str(gateway.trust.path.resolve()))
        if (secrets := credentials.secrets_path(registry.gateway)) is not None:
            files.append(str(secrets.resolve()))
        return cls(
            gateway,
            path=saved.answers_path(registry_path),
            files=files,
            memory=str(memory_path(registry_path).resolve()),
            persona=persona,
            announce=announce,
            handed=handed,
        )

    # --- stdin: what the client asked ---------------------------------------------------------

    async def tap(self, lines: AsyncIterator[str]) -> AsyncIterator[str]:
        """`lines`, unchanged; the opening requests among them noted, to key their answers (a line that
        cannot be one is not parsed: calls stay on the lean path)."""
        async for line in lines:
            if "/list" in line or '"initialize"' in line or "server/discover" in line:
                self._asked_for(line)
            yield line

    def _asked_for(self, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("method") not in saved.METHODS or "id" not in message:
            return
        method, params = message["method"], message.get("params")
        if isinstance(params, dict) and params.get("cursor") is not None:
            return  # a later page: not an opening answer
        key = saved.request_key(method, params, None if method == "initialize" else self._session)
        if key not in self._seen:  # asked again: its answer is saved or on its way (lists stay lean)
            self._seen.add(key)
            self._asked[saved.canonical(message["id"]).decode()] = (method, key)
        if method == "initialize":  # keys what this connection asks next (the answers follow its version)
            self._session = params

    # --- stdout: what was answered --------------------------------------------------------------

    def outgoing(self, data: bytes) -> bytes:
        """`data` (whole lines) without the answers the pre-server gave already."""
        if not self._early and not self._asked:
            return data
        kept = []
        for line in data.splitlines(keepends=True):
            if self._answer(line):
                kept.append(line)
        return b"".join(kept)

    def _answer(self, line: bytes) -> bool:
        """Note an answer to an opening request; False when it was answered early (dropped)."""
        if line.startswith(_ANSWER):  # the usual shape: its id read without parsing the whole line
            end = line.find(b",", len(_ANSWER))
            named = line[len(_ANSWER) : end].decode(errors="replace")
            if named not in self._asked and named not in self._early:
                return True
        try:
            message = json.loads(line)
        except ValueError:
            return True
        if not isinstance(message, dict) or "method" in message or "id" not in message:
            return True
        key = saved.canonical(message["id"]).decode()
        asked = self._asked.pop(key, None)
        if asked is not None and not isinstance(message.get("result"), dict):
            self._seen.discard(asked[1])  # an error: the next time it is asked may be saved
        elif asked is not None:
            method, asked_key = asked
            catalog = self._gateway.catalog if method in _CHANGED_BY else None  # the handshakes name no list
            self._got.append((asked_key, message["result"], catalog))
            if self._settled is not None:
                self._save()
        early = self._early.pop(key, None)
        if early is None:
            return True
        method, result = early
        if message.get("result") != result:
            if method in _CHANGED_BY:
                self._changed.add(_CHANGED_BY[method])
                self._wake.set()
            else:
                logger.warning("the early answer to %s differs from the gateway's own", method)
        return False

    # --- the connection's companion task ---------------------------------------------------------

    async def run(self) -> None:
        """Announce what differed from the early answers; save answers once the gateway has settled.

        Started after `stop_on_signals`: a SIGTERM the pre-server held back is delivered to it now."""
        preserver.resend_deferred()
        async with anyio.create_task_group() as tg:
            if self._files:
                tg.start_soon(self._settle)
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._changed:
                    changed, self._changed = self._changed, set()
                    await self._announce(changed)

    async def _settle(self) -> None:
        await self._gateway.wait_started()
        self._settled = self._gateway.catalog
        self._save(settling=True)

    def _save(self, *, settling: bool = False) -> None:
        """Save what was answered from the catalog the gateway settled on (the one `core.memory` now
        holds). Done at once, not in a task: a client may close stdin right after its first list."""
        got, self._got = self._got, []
        settled = self._settled
        # Lists only when every upstream has served: the next start then has all of them in memory and
        # would answer at once from it too (with one missing, it waits for the upstreams instead).
        complete = all(upstream.served for upstream in self._gateway.upstreams.values())
        same = {
            key: result
            for key, result, catalog in got
            if catalog is None or (complete and settled is not None and _same_lists(catalog, settled))
        }
        if settling:  # answered before the catalog settled: asked again, the answer may be saved
            self._seen.difference_update(key for key, _, _ in got if key not in same)
        if not same or saved.static_digest(self._files, self._persona) != self._static:
            return  # answered from another catalog, or the registry or pins changed meanwhile
        inputs = saved.inputs_digest(self._static, self._memory)
        if saved.save(self._path, files=self._files, memory=self._memory, inputs=inputs, answers=same):
            logger.debug("saved %d opening answer(s) in %s", len(same), self._path)


class KeptWriter:
    """A stream writer passing on only what `keep` keeps of each write (`EarlyStart.outgoing`)."""

    def __init__(self, writer: asyncio.StreamWriter, keep: Callable[[bytes], bytes]) -> None:
        self._writer, self._keep = writer, keep

    def write(self, data: bytes) -> None:
        if kept := self._keep(data):
            self._writer.write(kept)

    async def drain(self) -> None:
        await self._writer.drain()


def _same_lists(one: Catalog, other: Catalog) -> bool:
    return one is other or all(getattr(one, kind) == getattr(other, kind) for kind in ALL_LISTS)
