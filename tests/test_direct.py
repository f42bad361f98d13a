"""`/mcp` past Starlette's router (`server.direct`): the same layers, the same scope, the same answers.

A small Starlette app (a recording middleware, the `/mcp` route, another route) is driven through
ASGI twice, as Starlette routes it and through `Direct`, and what its route sees and what the
client reads must agree: every middleware runs, the scope carries what the router sets, an
exception is a 500 from the server-error layer, and other paths are Starlette's as before.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from mcpgw.server.direct import Direct

pytestmark = pytest.mark.anyio


class Tagging:
    """A middleware that marks the scope, so the route can tell it ran."""

    def __init__(self, app: Any, *, tag: str) -> None:
        self.app, self.tag = app, tag

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("tags", []).append(self.tag)
        await self.app(scope, receive, send)


class Endpoint:
    """An ASGI app as the `/mcp` route's endpoint (as the gateway's is: not a request function)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await _answer(scope, receive, send)


mcp = Endpoint()


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    if scope["method"] == "DELETE":
        raise RuntimeError("boom")
    if scope["method"] == "PUT":
        raise HTTPException(status_code=409, detail="taken")
    seen = (
        scope["tags"],
        type(scope["app"]).__name__,
        scope["route"].path,
        scope["endpoint"] is mcp,
        scope["path_params"],
        scope["router"] is not None,
    )
    await PlainTextResponse(repr(seen))(scope, receive, send)


def app() -> Starlette:
    async def other(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"other {request.scope['tags']}")

    built = Starlette(
        routes=[
            Route("/.well-known/x/personas/{persona}/mcp", endpoint=other),
            Route("/mcp", endpoint=mcp),
            Route("/personas/{persona}/mcp", endpoint=mcp),
            Route("/other", endpoint=other),
        ]
    )
    built.add_middleware(Tagging, tag="inner")
    built.add_middleware(Tagging, tag="outer")
    return built


async def request(target: Any, method: str, path: str) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    status, body = 0, b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            body += message.get("body", b"")

    with contextlib.suppress(RuntimeError):  # re-raised after the 500 was sent (the server logs it)
        await target(scope, receive, send)
    return status, body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/mcp"),
        ("GET", "/mcp"),
        ("DELETE", "/mcp"),
        ("PUT", "/mcp"),
        ("POST", "/personas/wide/mcp"),
        ("POST", "/personas/wi%20de/mcp"),
        ("POST", "/personas/a/b/mcp"),
        ("POST", "/personas/wide/mcp/"),
        ("POST", "/other"),
        ("GET", "/mcp/"),
    ],
)
async def test_direct_answers_as_the_router_does(method: str, path: str) -> None:
    routed = await request(app(), method, path)
    direct = await request(Direct(app(), paths=("/mcp", "/personas/{persona}/mcp")), method, path)
    assert direct == routed
    if (method, path) == ("POST", "/mcp"):
        assert direct == (200, b"(['outer', 'inner'], 'Starlette', '/mcp', True, {}, True)")
    if (method, path) == ("POST", "/personas/wide/mcp"):
        assert b"'/personas/{persona}/mcp', True, {'persona': 'wide'}" in direct[1]


def test_a_route_limited_to_some_methods_is_refused() -> None:
    limited = Starlette(routes=[Route("/mcp", endpoint=mcp, methods=["POST"])])
    with pytest.raises(ValueError, match="every method"):
        Direct(limited, paths=("/mcp",))


@pytest.mark.parametrize("earlier", ["/personas/{name}/{rest}", "/personas/admin/mcp", "/{anything}"])
def test_a_route_behind_one_that_may_take_its_requests_is_refused(earlier: str) -> None:
    shadowed = Starlette(
        routes=[Route(earlier, endpoint=mcp), Route("/personas/{persona}/mcp", endpoint=mcp)]
    )
    with pytest.raises(ValueError, match="may take its requests"):
        Direct(shadowed, paths=("/personas/{persona}/mcp",))
