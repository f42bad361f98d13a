"""The MCP endpoints reached without Starlette's router: their requests go straight to their routes.

Owns: `Direct`, the ASGI app `http.http_app` serves, in front of the Starlette app it is given.
A request for an MCP endpoint (`/mcp`, `/personas/<name>/mcp`) goes through the same layers the
Starlette app would put it through (the server-error handler, every middleware the app was given,
in order, the exception handler), then to the app that endpoint's route holds (with `[auth]`, its
guard), with the path's parameters as the router reads them; any other request goes to the
Starlette app itself.

Why: the router matches the path against each route's pattern, copies the match into the scope and
hands the request on through two more frames; per forwarded call over HTTP, that and Starlette's
own entry were a measurable share of the gateway's CPU for a decision that, for an MCP endpoint,
is always the same. Only the routing is skipped: every check (Host and Origin, CORS, the bearer
token, body limits, rate limits) runs as before, and the scope carries what the router would set.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Route, WebSocketRoute


class Direct:
    """ASGI app: requests for one of `paths` through `app`'s middleware to that path's route; others
    to `app`. A path may have parameters (`/personas/{persona}/mcp`); each must be the path of a
    route no route before it in `app` could take a request from."""

    def __init__(self, app: Starlette, *, paths: tuple[str, ...]) -> None:
        self.app = app
        # As `Starlette.build_middleware_stack` builds it (starlette 0.5x), around each route's app
        # instead of the router; `app` is given no exception handlers and no body size of its own.
        if app.exception_handlers or app.max_body_size is not None:
            raise ValueError("Direct builds the stack of an app without handlers or a body limit of its own")
        self.exact: dict[str, tuple[Route, Any]] = {}
        self.patterned: list[tuple[Route, Any]] = []
        for path in paths:
            index, route = next(
                (i, r) for i, r in enumerate(app.routes) if isinstance(r, Route) and r.path == path
            )
            if route.methods is not None:
                raise ValueError(f"the route for {path} must take every method (the router would answer 405)")
            if not all(_disjoint(earlier, route) for earlier in app.routes[:index]):
                raise ValueError(f"a route before the one for {path} may take its requests")
            stack: Any = ExceptionMiddleware(route.app, handlers={}, debug=app.debug)
            for cls, args, kwargs in reversed(app.user_middleware):
                stack = cls(stack, *args, **kwargs)
            target = (route, ServerErrorMiddleware(stack, handler=None, debug=app.debug))
            if route.param_convertors:
                self.patterned.append(target)
            else:
                self.exact[path] = target

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            target = self.exact.get(path)
            params: dict[str, Any] = {}
            if target is None:
                for route, stack in self.patterned:
                    if matched := route.path_regex.match(path):
                        target = (route, stack)
                        convert = route.param_convertors
                        params = {k: convert[k].convert(v) for k, v in matched.groupdict().items()}
                        break
            if target is not None:
                route, stack = target
                # What `Starlette.__call__` and the router put in the scope of a request they route here.
                scope["app"] = self.app
                scope["router"] = self.app.router
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = params
                await stack(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _disjoint(earlier: BaseRoute, route: Route) -> bool:
    """Whether `earlier` can take no HTTP request `route` matches: a route for websockets, or a route
    whose path's fixed start and `route`'s are not one the start of the other (or, both without
    parameters, different paths)."""
    if isinstance(earlier, WebSocketRoute):
        return True
    if not isinstance(earlier, Route):
        return False  # a mount or a host: not worked out, so not taken
    if not earlier.param_convertors and not route.param_convertors:
        return earlier.path != route.path
    mine, theirs = route.path.split("{", 1)[0], earlier.path.split("{", 1)[0]
    return not (mine.startswith(theirs) or theirs.startswith(mine))
