"""The loopback receiver of `mcpgw login`: where the browser lands after the user approves.

Owns: one listening socket on 127.0.0.1 (RFC 8252 §7.3), serving `GET /callback?code=..&state=..`
once and answering the browser with a short page. The mcp SDK leaves receiving the redirect to
the application (its `callback_handler`), and a whole web server is more than one request needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import SocketStream
from mcp.shared.auth import AuthorizationCodeResult

from mcpgw.errors import UpstreamUnavailable

HEAD_LIMIT = 16 * 1024
"""The longest request head read from the browser."""
_PAGE = "<!doctype html><title>mcpgw</title><p>{}</p><p>You can close this window.</p>"


class Receiver:
    """The redirect target of one login (one redirect per `wait()`, the SDK's `callback_handler`)."""

    def __init__(self, server: str, listener: anyio.abc.Listener[SocketStream], port: int) -> None:
        self.server = server
        self.port = port
        self.redirect_uri = f"http://127.0.0.1:{port}/callback"
        self._listener = listener
        self._result: AuthorizationCodeResult | None = None
        self._error: str | None = None
        self._done = anyio.Event()

    async def _serve(self) -> None:
        async def handle(stream: SocketStream) -> None:
            async with stream:
                with anyio.move_on_after(30):
                    await self._answer(stream)

        await self._listener.serve(handle)

    async def _answer(self, stream: SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
            try:
                head += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
        target = head.split(b"\r\n", 1)[0].split(b" ")
        parts = urlsplit(target[1].decode("latin-1")) if len(target) == 3 else None
        if parts is None or parts.path != "/callback" or self._done.is_set():
            await _respond(stream, "404 Not Found", "Nothing here.")
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if "code" in query:
            self._result = AuthorizationCodeResult(
                code=query["code"], state=query.get("state"), iss=query.get("iss")
            )
            await _respond(stream, "200 OK", f"Logged in to {self.server}.")
        else:
            reason = query.get("error_description") or query.get("error") or "no authorization code"
            self._error = reason
            await _respond(stream, "400 Bad Request", f"Login to {self.server} failed: {reason}")
        self._done.set()

    async def wait(self) -> AuthorizationCodeResult:
        await self._done.wait()
        result, error = self._result, self._error
        # Ready for another redirect: a step-up to more scope sends the browser round again.
        self._done, self._result, self._error = anyio.Event(), None, None
        if result is None:
            raise UpstreamUnavailable(self.server, f"login refused by the authorization server: {error}")
        return result


async def _respond(stream: SocketStream, status: str, text: str) -> None:
    from html import escape

    body = _PAGE.format(escape(text)).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(head.encode() + b"Connection: close\r\n\r\n" + body)


@contextlib.asynccontextmanager
async def receiving(server: str, *, port: int) -> AsyncIterator[Receiver]:
    """A `Receiver` listening on 127.0.0.1:`port` (0: a free one) until the block ends."""
    try:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    except OSError as exc:
        raise UpstreamUnavailable(
            server, f"cannot listen on 127.0.0.1:{port} for the login: {exc.strerror}"
        ) from None
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    receiver = Receiver(server, listener, bound)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(receiver._serve)
        try:
            yield receiver
        finally:
            group.cancel_scope.cancel()
