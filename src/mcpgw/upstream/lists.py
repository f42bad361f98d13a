"""The lists one upstream offers: its tools, resources, resource templates and prompts.

Owns: listing them (every page) at start and again when they change, and
noticing that they changed: a handshake-era upstream sends
`notifications/*/list_changed` on its session, a 2026-07-28 upstream announces
changes only on a `subscriptions/listen` stream. Whoever builds the catalog is
told which lists changed (`on_change`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import anyio
from mcp.client.session import ClientSession
from mcp.client.subscriptions import (
    ListenNotSupportedError,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    SubscriptionLost,
    ToolsListChanged,
    listen,
)
from mcp.shared.exceptions import MCPError
from mcp_types import METHOD_NOT_FOUND

from mcpgw.errors import UpstreamError
from mcpgw.upstream.session import Session, describe

logger = logging.getLogger("mcpgw.upstream")

ListKind = Literal["tools", "resources", "resource_templates", "prompts"]
ALL_LISTS: tuple[ListKind, ...] = ("tools", "resources", "resource_templates", "prompts")
MAX_LIST_PAGES = 100

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

LIST_OF: dict[ListKind, str] = {
    "tools": "tools",
    "resources": "resources",
    "resource_templates": "resources",
    "prompts": "prompts",
}
"""The client-facing list (what `notifications/*/list_changed` names) each kind belongs to."""

OnChange = Callable[[tuple[ListKind, ...]], Coroutine[Any, Any, None]]
"""Told which lists changed (run as a task at start, so a coroutine function)."""


class Lists:
    """One upstream's lists, as it last gave them."""

    def __init__(
        self,
        name: str,
        session: Session,
        *,
        timeout: float,
        on_change: OnChange | None = None,
    ) -> None:
        self.name = name
        self._session = session
        self._timeout = timeout
        """Bounds each page. Listing is bounded like start-up, not like a call: a short per-call
        timeout must not keep a slow-to-list server out of the catalog."""
        self._on_change = on_change
        self.items: dict[ListKind, list[dict[str, Any]]] = {
            "tools": [],
            "resources": [],
            "resource_templates": [],
            "prompts": [],
        }

    def _supports(self, kind: ListKind) -> bool:
        return _CAPABILITY_OF[kind] in self._session.capabilities

    async def refresh_all(self, client: ClientSession) -> None:
        async with anyio.create_task_group() as tg:
            for kind in _LIST_METHODS:
                if self._supports(kind):
                    tg.start_soon(self._refresh, client, kind)

    async def _refresh(self, client: ClientSession, kind: ListKind) -> None:
        method, key = _LIST_METHODS[kind]
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params = {"cursor": cursor} if cursor else None
            try:
                page = await self._session.send(client, method, params, timeout=self._timeout)
            except UpstreamError as exc:
                cause = exc.__cause__
                if kind != "tools" and isinstance(cause, MCPError):
                    # A server that advertises a capability but lacks one list method is tolerated. The
                    # usual case is `resources/templates/list`: the SDK's lowlevel server, given no
                    # handler for it, answers "Method not found", and so do published servers such as
                    # mcp-server-sqlite. That is not implementing the list, nothing to warn of at every
                    # start. A list that fails in any other way is worth a warning.
                    quiet = cause.code == METHOD_NOT_FOUND
                    logger.log(
                        logging.DEBUG if quiet else logging.WARNING,
                        "upstream %s: %s failed: %s",
                        self.name,
                        method,
                        exc,
                    )
                    break
                raise
            items.extend(page.get(key) or [])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        self.items[kind] = items

    async def refresh(self, kinds: tuple[ListKind, ...]) -> None:
        client = self._session.client
        if client is None:
            return
        for kind in kinds:
            if self._supports(kind):
                await self._refresh(client, kind)
        if self._on_change is not None:
            await self._on_change(kinds)

    async def _refresh_quietly(self, kinds: tuple[ListKind, ...]) -> None:
        try:
            await self.refresh(kinds)
        except UpstreamError as exc:
            logger.warning("upstream %s: refreshing %s failed: %s", self.name, ", ".join(kinds), exc)

    def notified(self, method: str | None) -> None:
        """A notification arrived on the session: a `list_changed` one has the lists listed again."""
        kinds = _CHANGED.get(method or "")
        tasks = self._session.tasks
        if kinds and tasks is not None:
            # Re-list off the session's receive loop: a request awaited here would deadlock it.
            tasks.start_soon(self._refresh_quietly, kinds)

    async def listen(self, client: ClientSession) -> None:
        """A 2026-07-28 upstream announces list changes only on a `subscriptions/listen` stream."""
        capabilities = self._session.capabilities
        changing = {k: bool((capabilities.get(k) or {}).get("listChanged")) for k in _LISTEN_KINDS}
        if not any(changing.values()):
            return
        try:
            async with listen(
                client,
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
