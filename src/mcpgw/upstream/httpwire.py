"""The lean request path to a 2026-07-28 streamable HTTP upstream: one POST on the session's pooled
client, its answer read as parsed JSON, or its SSE stream read through.

Owns: posting one forwarded request (`HttpWire.request`) with the headers the SDK's session stamps
(protocol version, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`), reading the answer from a JSON body or
an SSE stream (progress to the caller's relay, other notifications to the SDK's session, a stream
cut short resumed with `Last-Event-ID`), and turning what is not an answer (202, a redirect left
unfollowed, an HTTP error, another content type) into the JSON-RPC error the SDK's transport would
have made of it.

Why not the SDK's `streamable_http_client` for these requests: per call it dumps the request to a
model, queues it through memory streams to a writer task that starts a task per POST, validates
the answer into a JSON-RPC model and hands it back through another stream; profiled, that was the
largest share of the gateway's own CPU per HTTP call. A 2026-07-28 request needs no session state
(each request carries its own envelope), so the lean path posts it from the calling task. The SDK's
transport keeps the rest: the negotiation, the listen stream, pings, and every handshake-era upstream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import urllib.request
from typing import Any

import anyio
import httpx2
import mcp_types as types
from httpx2 import EventSource

from mcpgw import _compat
from mcpgw.upstream import http1
from mcpgw.upstream.deadlines import UNLIMITED, Deadlines, Limit
from mcpgw.upstream.login import LoginAuth
from mcpgw.upstream.wire import (
    FIRST_ID,
    UNSIZED,
    Notify,
    ProgressRelay,
    dumps,
    parse,
    relay_progress,
)

logger = logging.getLogger("mcpgw.upstream")

MAX_SSE_EVENT = 1024 * 1024
"""Bytes in one SSE event, as the SDK's transport allows by default."""
RESUMES = 2
"""Attempts to resume an SSE stream that ended without the answer (the SDK's transport makes two)."""
RESUME_DELAY = 1.0
"""Seconds before resuming when the server named no `retry` (the SDK's default)."""
HEADS = 256
"""POST heads kept per upstream, one per distinct set of request headers (then made afresh)."""


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _left(limit: Limit, timeout: float) -> float:
    """Seconds left of `limit` (all of `timeout` if it was not entered), for anyio's cancel scope."""
    if timeout >= UNLIMITED:
        return math.inf
    if limit.deadline == math.inf:
        return timeout
    return max(limit.deadline - asyncio.get_running_loop().time(), 0.0)


def _json_answer(body: bytes) -> dict[str, Any]:
    """The JSON-RPC answer in a JSON body, or the error the SDK's transport makes of a bad one."""
    try:
        reply = parse(body)
    except ValueError as exc:
        return _error(types.PARSE_ERROR, f"Failed to parse JSON response: {exc}")
    if isinstance(reply, dict) and ("result" in reply or "error" in reply):
        return reply
    return _error(types.PARSE_ERROR, "Failed to parse JSON response: not a JSON-RPC answer")


class HttpWire:
    """Requests posted to one HTTP upstream outside the SDK's transport, on its pooled client."""

    closed = False
    """Never: each request is its own exchange (the pooled client lives as long as the session)."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self._http = http
        self._url = httpx2.URL(url)
        """Parsed once: httpx parses a URL given as text again for every request (~45 us)."""
        plain = self._url.scheme == "http" and not (http.trust_env and urllib.request.getproxies())
        self._exchanges = http1.Exchanges(self._url) if plain else None
        """Plain HTTP without a proxy: requests that need nothing of the client go out on its own
        keep-alive connections (`upstream.http1`)."""
        self._ids = itertools.count(FIRST_ID)
        self._heads: dict[tuple[Any, ...], bytes] = {}
        self._deadlines = Deadlines()

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        headers: dict[str, str],
        timeout: float,
        on_progress: ProgressRelay | None,
        on_notify: Notify,
    ) -> tuple[dict[str, Any], int]:
        """The JSON-RPC answer (`result` or `error`) to one request, and the size of the body it came
        in when read whole (else `UNSIZED`: no text in it is longer, `session` skips its size walk);
        `TimeoutError` after `timeout`.

        Leaving early (a timeout, the caller cancelled) closes the POST's stream: the 2026-07-28
        spelling of cancelling a request over HTTP.
        """
        request_id = next(self._ids)
        if on_progress is not None:
            meta = params.get("_meta")
            params = {
                **params,
                "_meta": {**(meta if isinstance(meta, dict) else {}), "progressToken": request_id},
            }
        body = dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        sent = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            **headers,
        }
        limit = self._deadlines.limit(timeout)
        if self._exchanges is not None and self._needs_nothing_of_the_client():
            try:
                # One timer for the upstream's requests, not anyio's cancel scope or a timer of each
                # request's own (`upstream.deadlines`): nothing under it is anyio's, so no shielded
                # section it could cut into.
                with limit:
                    response = await self._exchanges.post(body, self._head(self._exchanges, headers, sent))
            except http1.Refused:
                pass  # a redirect or an auth challenge: sent again below, for httpx to answer
            else:
                if isinstance(response, bytes):  # a plain JSON answer, read whole
                    return _json_answer(response), len(response)
                with anyio.fail_after(_left(limit, timeout)):
                    try:
                        # What httpx's own response has, for an SSE reader and a cookie jar.
                        response.request = httpx2.Request("POST", self._url, headers=sent)
                        if "set-cookie" in response.headers:
                            self._http.cookies.extract_cookies(response)
                        answer = await self._answer(response, request_id, sent, on_progress, on_notify)
                        return answer, UNSIZED
                    finally:
                        await response.aclose()
        with anyio.fail_after(_left(limit, timeout)):
            async with _compat.stream_within_origin(
                self._http, "POST", self._url, content=body, headers=sent
            ) as response:
                return await self._answer(response, request_id, sent, on_progress, on_notify), UNSIZED

    def close(self) -> None:
        """Close the idle keep-alive connections of `upstream.http1` (the session has ended)."""
        if self._exchanges is not None:
            self._exchanges.close()

    def _needs_nothing_of_the_client(self) -> bool:
        """No token to add, no cookie to send, no hook to run: the request is its headers and body."""
        http, auth = self._http, self._http.auth
        if auth is not None and not (isinstance(auth, LoginAuth) and auth.sends_nothing()):
            return False
        return not http.cookies and not http.event_hooks["request"] and not http.event_hooks["response"]

    def _head(self, exchanges: http1.Exchanges, headers: dict[str, str], sent: dict[str, str]) -> bytes:
        """The POST's head for these request headers and the client's own, made once for each
        (`headers` are the request's stamp: its version, method and name recur call after call)."""
        key = (tuple(headers.items()), tuple(self._http.headers.raw))
        head = self._heads.get(key)
        if head is None:
            head = exchanges.head(self._merged(sent))
            if len(self._heads) >= HEADS:
                self._heads.clear()
            self._heads[key] = head
        return head

    def _merged(self, sent: dict[str, str]) -> list[tuple[str, str]]:
        """The client's default headers under the request's own, as httpx merges them."""
        own = {k.lower() for k in sent}
        return [(k, v) for k, v in self._http.headers.multi_items() if k.lower() not in own] + list(
            sent.items()
        )

    async def _answer(
        self,
        response: httpx2.Response,
        request_id: int,
        headers: dict[str, str],
        on_progress: ProgressRelay | None,
        on_notify: Notify,
    ) -> dict[str, Any]:
        status = response.status_code
        kind = response.headers.get("content-type", "").lower()
        if status == 202:
            return _error(types.INVALID_REQUEST, "server answered a request with 202 Accepted")
        redirect = _compat.unfollowed_redirect(response)
        if redirect is not None:
            logger.warning("%s", redirect)
            return _error(types.INVALID_REQUEST, redirect)
        if status >= 400:
            if kind.startswith("application/json"):
                try:
                    reply = parse(await response.aread())
                except (ValueError, httpx2.StreamError):
                    reply = None
                if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
                    return {"error": reply["error"]}
            if status == 404:
                return _error(types.METHOD_NOT_FOUND, "Not Found")
            return _error(types.INTERNAL_ERROR, "Server returned an error response")
        if kind.startswith("application/json"):
            try:
                return _json_answer(await response.aread())
            except httpx2.StreamError as exc:
                return _error(types.PARSE_ERROR, f"Failed to parse JSON response: {exc}")
        if kind.startswith("text/event-stream"):
            return await self._stream(response, request_id, headers, on_progress, on_notify)
        return _error(types.INVALID_REQUEST, f"Unexpected content type: {kind}")

    async def _stream(
        self,
        response: httpx2.Response,
        request_id: int,
        headers: dict[str, str],
        on_progress: ProgressRelay | None,
        on_notify: Notify,
    ) -> dict[str, Any]:
        """The answer on an SSE stream; resumed with `Last-Event-ID` when it ends without it."""
        last_id: str | None = None
        retry_ms: int | None = None
        current: httpx2.Response | None = response
        for attempt in range(RESUMES + 1):
            if attempt:
                await anyio.sleep(retry_ms / 1000 if retry_ms is not None else RESUME_DELAY)
                current = await self._resume(headers, last_id)
            if current is None:
                continue
            try:
                async for event in EventSource(current, max_event_size=MAX_SSE_EVENT):
                    last_id = event.id or last_id
                    retry_ms = event.retry if event.retry is not None else retry_ms
                    if event.event != "message" or not event.data:
                        continue
                    try:
                        message = parse(event.data)
                    except ValueError as exc:
                        return _error(types.PARSE_ERROR, f"Failed to parse SSE message: {exc}")
                    if not isinstance(message, dict):
                        continue
                    if "method" not in message and ("result" in message or "error" in message):
                        return message
                    await self._notified(message, request_id, on_progress, on_notify)
            except httpx2.SSEError as exc:
                return _error(types.CONNECTION_CLOSED, f"SSE stream failed: {exc}")
            except httpx2.HTTPError:
                pass  # cut short: resumed below, as the SDK's transport does
            finally:
                if current is not response:
                    await current.aclose()
            if last_id is None:
                return _error(types.CONNECTION_CLOSED, "SSE stream ended without a response")
        return _error(types.CONNECTION_CLOSED, "SSE stream ended and reconnection attempts were exhausted")

    async def _resume(self, headers: dict[str, str], last_id: str | None) -> httpx2.Response | None:
        """The stream resumed after `last_id` (a GET, as the spec has it); None if that failed."""
        request = self._http.build_request(
            "GET", self._url, headers={**headers, "last-event-id": last_id or ""}
        )
        try:
            response = await self._http.send(request, stream=True, follow_redirects=False)
        except httpx2.HTTPError:
            return None
        if response.status_code >= 400 or not response.headers.get("content-type", "").lower().startswith(
            "text/event-stream"
        ):
            await response.aclose()
            return None
        return response

    async def _notified(
        self, message: dict[str, Any], request_id: int, on_progress: ProgressRelay | None, on_notify: Notify
    ) -> None:
        method = message.get("method")
        params = message.get("params")
        if "id" in message or not isinstance(method, str):
            logger.warning("an upstream sent a request on a 2026-07-28 POST stream; it was ignored")
            return
        if method == "notifications/progress" and isinstance(params, dict):
            if on_progress is not None and params.get("progressToken") == request_id:
                await relay_progress(on_progress, params)
            return
        await on_notify(method, params if isinstance(params, dict) else None)
