"""The browser's way back to the gateway after a per-user upstream login: `GET /oauth/callback`.

Owns: the page the user's browser lands on after approving (or refusing) at an upstream's
authorization server, which hands the code to the login in progress (`core.peruser`, by its OAuth
`state`) and says how it ended. It needs no bearer token (a browser has none): the unguessable,
single-use `state` of a login begun for one principal is what binds the code to that principal.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from mcpgw.upstream.userlogin import CALLBACK_PATH

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway

_PAGE = "<!doctype html><title>mcpgw</title><p>{}</p>"


def _page(text: str, status: int) -> HTMLResponse:
    # Never cached, never framed, no referrer: the URL carries a code until it is spent.
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'none'",
    }
    return HTMLResponse(_PAGE.format(escape(text)), status_code=status, headers=headers)


def callback_route(gateway: Gateway) -> Route:
    async def callback(request: Request) -> HTMLResponse:
        query = request.query_params
        pending = await gateway.per_user.arrive(
            query.get("state"),
            query.get("code"),
            error=query.get("error_description") or query.get("error"),
            iss=query.get("iss"),
        )
        if pending is None:
            return _page(
                "This login link is unknown, used or expired: call the tool again for a new one.", 400
            )
        if pending.error is not None:
            return _page(f"Login to {pending.server} failed: {pending.error}", 400)
        return _page(
            f"Logged in to {pending.server}. You can close this window and call the tool again.", 200
        )

    return Route(CALLBACK_PATH, endpoint=callback, methods=["GET"])
