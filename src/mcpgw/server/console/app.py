"""The console's routes: every page and action behind the access check, and the login form.

Owns the Starlette app mounted at `/admin`: which path serves which page or action, the one
wrapper that answers refused visitors (401 with the login form, 403, or 404 when the console is
off) and checks every POST's origin and CSRF token before an action runs, and the login and
logout forms that turn a bearer token into a session cookie and back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mcpgw.audit import Outcome
from mcpgw.server.console import personas, servers, spend, traffic, trust
from mcpgw.server.console.access import CSRF_FIELD, PREFIX, SESSION_COOKIE, Access, Refused, Visitor
from mcpgw.server.console.context import Console
from mcpgw.server.console.layout import render, url

Page = Callable[[Console, Request, Visitor], Awaitable[Response]]
Action = Callable[[Console, Request, Visitor, dict[str, str]], Awaitable[Response]]
MAX_FORM_FIELDS = 50


def _login_form(reason: str | None, status: int) -> Response:
    body = (
        "<p>The console needs a bearer token from the gateway's authorization server with the admin scope. "
        "It is checked once, here; the browser then keeps an HttpOnly session cookie for this console "
        "only.</p>"
        f'<form class="card" method="post" action="{url("login")}"><label>Bearer token '
        '<input type="password" name="token" autocomplete="off" required></label>'
        '<button type="submit">Log in</button></form>'
    )
    response = render("Log in", body, active="", visitor=None, problem=reason, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mcpgw admin"'
    return response


def _refusal(exc: Refused) -> Response:
    if exc.login:
        return _login_form(exc.reason, exc.status)
    return render("Refused", "", active="", visitor=None, problem=exc.reason, status=exc.status)


class Routes:
    """Every console route, bound to one `Console` and its `Access`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.access = Access(console)

    def page(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                visitor = await self.access.visitor(request)
            except Refused as exc:
                return _refusal(exc)
            return await handler(self.console, request, visitor)

        return endpoint

    def action(self, name: str, handler: Action) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                visitor = await self.access.visitor(request)
            except Refused as exc:
                return _refusal(exc)
            form = await self._form(request)
            try:
                self.access.check_post(request, visitor, form.get(CSRF_FIELD))
            except Refused as exc:
                await self.console.record(
                    request.path_params.get("action", name),
                    principal=visitor.principal,
                    server=request.path_params.get("name"),
                    outcome=Outcome.DENIED,
                    error=exc.reason,
                )
                return _refusal(exc)
            return await handler(self.console, request, visitor, form)

        return endpoint

    async def _form(self, request: Request) -> dict[str, str]:
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        return {key: value for key, value in form.items() if isinstance(value, str)}

    async def login(self, request: Request) -> Response:
        settings = self.console.registry.auth
        if request.method == "GET" or settings is None:
            try:
                await self.access.visitor(request)
                return RedirectResponse(url("servers"), status_code=303)
            except Refused as exc:
                return _refusal(exc) if not exc.login else _login_form(None, 200)
        try:
            self.access.check_post(request, None, None)
            form = await self._form(request)
            principal, expires = await self.access.check_token(settings, form.get("token", "").strip())
        except Refused as exc:
            return _refusal(exc)
        sid, until = self.access.open_session(principal, expires)
        await self.console.record("login", principal=principal)
        response = RedirectResponse(url("servers"), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            max_age=max(1, int(until - time.time())),
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self.access.cookie_secure(),
        )
        return response

    async def logout(self, request: Request) -> Response:
        try:
            visitor = await self.access.visitor(request)
            form = await self._form(request)
            self.access.check_post(request, visitor, form.get(CSRF_FIELD))
        except Refused as exc:
            return _refusal(exc)
        self.access.close_session(request)
        await self.console.record("logout", principal=visitor.principal)
        response = RedirectResponse(url("login"), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    async def stream(self, request: Request) -> Response:
        try:
            visitor = await self.access.visitor(request)
        except Refused as exc:
            return Response(exc.reason, status_code=exc.status)
        return await traffic.stream(self.console, self.access, request, visitor)


async def _home(request: Request) -> Response:
    return RedirectResponse(url("servers"), status_code=303)


async def _script(request: Request) -> Response:
    return traffic.script()


def console_app(console: Console) -> Starlette:
    """The console as an ASGI app, to mount at `/admin`."""
    routes = Routes(console)
    table: list[Any] = [
        Route("/", _home),
        Route("/servers", routes.page(servers.page)),
        Route("/servers/add", routes.action("add-server", servers.act), methods=["POST"]),
        Route("/servers/{name}/{action}", routes.action("server", servers.act), methods=["POST"]),
        Route("/personas", routes.page(personas.page)),
        Route("/traffic", routes.page(traffic.page)),
        Route("/traffic/stream", routes.stream),
        Route("/traffic/request/{request_id}", routes.page(traffic.detail)),
        Route("/spend", routes.page(spend.page)),
        Route("/trust", routes.page(trust.page)),
        Route("/trust/{name}/approve", routes.action("approve", trust.act), methods=["POST"]),
        Route("/login", routes.login, methods=["GET", "POST"]),
        Route("/logout", routes.logout, methods=["POST"]),
        Route("/static/traffic.js", _script),
    ]
    return Starlette(routes=table)
