"""The MCP endpoint reached without Starlette's router: requests to `/mcp` go straight to its route.

Owns: `Direct`, the ASGI app `http.http_app` serves, in front of the Starlette app it is given.
A request for the MCP endpoint's exact path goes through the same layers the Starlette app would
put it through (the server-error handler, every middleware the app was given, in order, the
exception handler), then to the app the `/mcp` route holds (with `[auth]`, its guard); any other
request goes to the Starlette app itself.

Why: the router matches the path against each route's pattern, copies the match into the scope and
hands the request on through two more frames; per forwarded call over HTTP, that and Starlette's
own entry were a measurable share of the gateway's CPU for a decision that, for `/mcp`, is always
the same. Only the routing is skipped: every check (Host and Origin, CORS, the bearer token, body
limits, rate limits) runs as before, and the scope carries what the router would have set.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Route


class Direct:
    """ASGI app: requests for `path` through `app`'s middleware to its route there; others to `app`."""

    def __init__(self, app: Starlette, *, path: str) -> None:
        self.app = app
        self.path = path
        route = next(r for r in app.routes if isinstance(r, Route) and r.path == path)
        if route.methods is not None:
            raise ValueError(f"the route for {path} must take every method (the router would answer 405)")
        self.route = route
        # As `Starlette.build_middleware_stack` builds it (starlette 0.5x), around the route's app
        # instead of the router; `app` is given no exception handlers and no body size of its own.
        if app.exception_handlers or app.max_body_size is not None:
            raise ValueError("Direct builds the stack of an app without handlers or a body limit of its own")
        stack: Any = ExceptionMiddleware(route.app, handlers={}, debug=app.debug)
        for cls, args, kwargs in reversed(app.user_middleware):
            stack = cls(stack, *args, **kwargs)
        self.stack = ServerErrorMiddleware(stack, handler=None, debug=app.debug)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and not scope.get("root_path"):
            # What `Starlette.__call__` and the router put in the scope of a request they route here.
            scope["app"] = self.app
            scope["router"] = self.app.router
            scope["route"] = self.route
            scope["endpoint"] = self.route.endpoint
            scope["path_params"] = {}
            await self.stack(scope, receive, send)
            return
        await self.app(scope, receive, send)
