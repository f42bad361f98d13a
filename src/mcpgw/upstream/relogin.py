"""A login renewed during a call: the authorization URL goes to the caller's client, not a browser.

Owns: `ThroughClient`, the redirect and callback handlers the mcp SDK's `OAuthClientProvider` runs
when a running gateway's own login (`mcpgw login`) no longer does: the server asks for more scope
(403 `insufficient_scope`), or it moved to another authorization server and the login there must
start afresh (SEP-2352), or the tokens are gone past refreshing. The SDK then builds the
authorization URL as it would for `mcpgw login`; here it is put to the client of the call in
flight as a URL-mode elicitation (the upstream's own elicitation path, so either era's client gets
it as it gets an upstream's), the browser's redirect comes back to the loopback port the client
was registered with (RFC 8252), and the call goes on with the new token once the user approved.

Also the scope a renewed login asks for: what was granted and what the server challenged with
(`widened`, SEP-2350), and that scope put into an authorization URL (`asking_for`).

Only where the gateway's callers are its user: without `[auth]` (stdio, or HTTP on loopback).
With `[auth]` any caller could log the gateway's shared login in as itself: there the call fails
with "needs login" (or see `per_user`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import anyio
import httpx2
from mcp.shared.auth import AuthorizationCodeResult

from mcpgw.errors import GatewayError, NeedsLogin
from mcpgw.upstream import loopback

LOGIN_WINDOW = 600.0
"""Seconds the user has to approve once the client was given the link (a hang guard)."""

Ask = Callable[[dict[str, Any]], Awaitable[Any]]
"""Puts an `elicitation/create` to the client of the call in flight; its answer (an `ElicitResult`)."""


class ThroughClient:
    """The SDK's `redirect_handler` and `callback_handler` for a login renewed during a call."""

    def __init__(self, server: str, *, ask: Ask, on_refused: Callable[[str], None]) -> None:
        self.server = server
        self._ask = ask
        self._on_refused = on_refused
        self._stack: contextlib.AsyncExitStack | None = None
        self._receiver: loopback.Receiver | None = None

    def _refuse(self) -> NeedsLogin:
        needed = NeedsLogin(self.server)
        self._on_refused(needed.reason)
        return needed

    async def open_url(self, authorization_url: str) -> None:
        redirect = (parse_qs(urlsplit(authorization_url).query).get("redirect_uri") or [""])[0]
        target = urlsplit(redirect)
        if target.hostname != "127.0.0.1" or not target.port:
            raise self._refuse()  # not a loopback redirect (a per-user login's): nothing to receive it here
        await self._close()
        stack = contextlib.AsyncExitStack()
        self._receiver = await stack.enter_async_context(loopback.receiving(self.server, port=target.port))
        self._stack = stack
        params = {
            "mode": "url",
            "elicitationId": uuid.uuid4().hex,
            "url": authorization_url,
            "message": f"{self.server} asks you to log in again (more scope, or a new authorization server)",
        }
        try:
            answer = await self._ask(params)
        except GatewayError:
            answer = None  # no client in flight that can open a link: a login is due
        if getattr(answer, "action", None) != "accept":
            await self._close()
            raise self._refuse()

    async def callback(self) -> AuthorizationCodeResult:
        receiver = self._receiver
        if receiver is None:
            raise self._refuse()
        try:
            with anyio.fail_after(LOGIN_WINDOW):
                return await receiver.wait()
        except TimeoutError:
            raise self._refuse() from None
        finally:
            await self._close()

    async def _close(self) -> None:
        stack, self._stack, self._receiver = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def widened(context: Any, response: httpx2.Response) -> str:
    """The scope granted so far and the one a 403 challenges with, together (SEP-2350's union)."""
    from mcp.client.auth.utils import extract_scope_from_www_auth

    granted = (context.current_tokens.scope or "") if context.current_tokens else ""
    wanted = extract_scope_from_www_auth(response) or ""
    return " ".join(dict.fromkeys([*granted.split(), *wanted.split()]))


def asking_for(authorization_url: str, scope: str) -> str:
    """The authorization URL asking for `scope` too. The SDK (mcp 2.3) picks the scope of a new
    authorization from the 401's challenge or the resource's metadata, not from what it is given:
    a step-up found on an earlier call (a 403 on one tool) would be forgotten by the login."""
    parts = urlsplit(authorization_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    asked = next((value for key, value in query if key == "scope"), "")
    union = " ".join(dict.fromkeys([*asked.split(), *scope.split()]))
    query = [(key, value) for key, value in query if key != "scope"] + [("scope", union)]
    return parts._replace(query=urlencode(query)).geturl()
