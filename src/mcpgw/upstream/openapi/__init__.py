"""OpenAPI upstreams: a REST API's operations served as MCP tools by a fastmcp server in this process.

Owns: `open_server`, which turns an `OpenApiServer` entry into the lowlevel MCP server its
`Transport` connects to over memory streams, so the API's tools reach clients through the same
session, catalog, personas, data rules, pins, audit and limits as any other upstream's. Its parts:

- `spec`: loading and checking the document, the base URL, the operations served;
- `names`: each operation's tool name (valid, within 64 characters with the namespace, stable).

Here: fastmcp's `OpenAPIProvider` builds the tools (parameters and request body as the input
schema, `$ref`s resolved, the HTTP request, JSON or text results); mcpgw gives it the HTTP client
(base URL, the registry's headers, the timeout, 4xx/5xx answers as tool errors with the status,
body and `Retry-After`, failed requests named), the names, and the annotations fastmcp leaves out
(read-only for GET/HEAD, destructive for DELETE, idempotent for PUT and DELETE).

This package imports fastmcp's server stack (about half a second): `upstream.transports` imports it
only when a gateway has an OpenAPI server, and the spec is parsed in a worker thread, so neither
the start of other gateways nor the event loop of this one waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
import httpx2

from mcpgw import _compat
from mcpgw.config import OpenApiServer, namespace_of
from mcpgw.errors import ConfigError
from mcpgw.upstream.openapi import names, spec

logger = logging.getLogger("mcpgw.upstream")

__all__ = ["build", "names", "open_server", "spec"]


async def open_server(
    name: str, config: OpenApiServer, stack: AsyncExitStack, *, environ: Mapping[str, str] | None = None
) -> Any:
    """The lowlevel MCP server serving `config`'s API; its HTTP client is closed by `stack`.

    A spec that cannot be served is a `ConfigError` naming `servers.NAME.openapi` and why.
    """
    key = f"servers.{name}.openapi"
    params = config.to_params(name, environ=environ)
    loaded = await spec.load(params.spec, key=key, headers=params.headers, base_url=params.base_url)
    api = spec.base_url(loaded.document, given=params.base_url, spec_url=loaded.url, key=key)
    http = httpx2.AsyncClient(
        base_url=api,
        transport=_Naming(httpx2.AsyncHTTPTransport()),
        headers=params.headers,
        timeout=_longest(config),
        follow_redirects=True,  # httpx drops the registry's Authorization on a redirect to another host
        event_hooks={"response": [_refused]},
    )
    stack.push_async_callback(http.aclose)
    server = await anyio.to_thread.run_sync(
        partial(build, name, loaded.document, config=config, http=http, key=key)
    )
    return _compat.fastmcp_lowlevel_server(server)


def _longest(config: OpenApiServer) -> float | None:
    """The HTTP client's timeout: the longest a call of this server may take (`tool_timeouts` too).
    None: the gateway's default call timeout bounds each call, and its cancellation ends the request."""
    if config.timeout is None:
        return None
    return max([config.timeout, *config.tool_timeouts.values()])


ERROR_BODY_CHARS = 2000
"""The part of an error answer's body a tool error carries."""


async def _refused(response: httpx2.Response) -> None:
    """An API's 4xx/5xx answer as a tool error with its status and body, whatever the status.

    Why not fastmcp's: it turns a 429 into "Rate limited by upstream API" without the body or the
    `Retry-After` the API sent, and logs every error answer at ERROR with "Error calling tool"; an
    answer is not a gateway failure (the audit log records it), so it is logged at INFO here.
    """
    if response.status_code < 400:
        return
    from fastmcp.exceptions import ToolError

    await response.aread()
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    body = response.text.strip()
    if media in ("text/html", "application/xhtml+xml") or body.lower().startswith(
        ("<!doctype html", "<html")
    ):
        body = "(an HTML page)"
    elif len(body) > ERROR_BODY_CHARS:
        body = body[:ERROR_BODY_CHARS] + " ... (cut)"
    retry = response.headers.get("retry-after")
    message = f"HTTP {response.status_code} {response.reason_phrase}" + (
        f" (Retry-After: {retry})" if retry else ""
    )
    raise ToolError(f"{message}: {body}" if body else message, log_level=logging.INFO)


class _Naming(httpx2.AsyncBaseTransport):
    """Says which request failed: httpx's "All connection attempts failed" alone does not tell the
    caller (or the log) which API is down. The error keeps its type, so fastmcp still tells a
    timeout ("Upstream request timed out") from other failures."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            raise type(exc)(f"{request.method} {request.url.copy_with(query=None)}: {exc}") from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def build(
    name: str, document: dict[str, Any], *, config: OpenApiServer, http: httpx2.AsyncClient, key: str
) -> Any:
    """The fastmcp server of `document`'s selected operations, calling the API through `http`."""
    started = time.perf_counter()
    served = spec.selected(
        document, include=config.include, exclude=config.exclude, headers=config.headers, key=key
    )
    tool_names = names.tool_names(
        spec.operations(served), budget=names.budget(namespace_of(name, config)), key=key
    )
    from fastmcp import FastMCP
    from fastmcp.server.providers.openapi import OpenAPITool
    from mcp_types import ToolAnnotations

    _logs_through_mcpgw()

    def customised(route: Any, component: Any) -> None:
        if not isinstance(component, OpenAPITool):
            return
        method = str(route.method).upper()
        # fastmcp's own name stays only if its route is not the spec's (the catalog then says so)
        component.name = tool_names.get((method, route.path), component.name)
        component.annotations = ToolAnnotations(
            title=route.summary or None,
            read_only_hint=method in ("GET", "HEAD"),
            destructive_hint=True if method == "DELETE" else None,
            idempotent_hint=True if method in ("PUT", "DELETE") else None,
            open_world_hint=True,
        )
        if not _answers_json(route):
            # fastmcp gives a text/plain answer an output schema too, then returns it as text only;
            # a client that checks results against the schema would refuse every such call.
            component.output_schema = None

    info: dict[str, Any] = document["info"] if isinstance(document.get("info"), dict) else {}
    try:
        server = FastMCP.from_openapi(
            served,
            client=http,
            name=str(info.get("title") or name),
            mcp_component_fn=customised,
            # Why a request could not be built or sent is what the caller needs to see.
            mask_error_details=False,
            instructions=info.get("description") if isinstance(info.get("description"), str) else None,
        )
    except ConfigError:
        raise
    except Exception as exc:  # fastmcp raises ValueError and pydantic errors for a spec it cannot read
        raise ConfigError(f"the spec cannot be served: {_reason(exc)}", key=key) from None
    logger.info(
        "upstream %s: %d operations of its OpenAPI spec read in %.0f ms",
        name,
        len(tool_names),
        (time.perf_counter() - started) * 1000,
    )
    return server


def _answers_json(route: Any) -> bool:
    """Whether a 2xx answer of the operation is JSON (what fastmcp returns as structured content)."""
    return any(
        media.split(";")[0].strip() == "application/json" or media.split(";")[0].strip().endswith("+json")
        for status, response in route.responses.items()
        if str(status).startswith("2")
        for media in response.content_schema
    )


def _logs_through_mcpgw() -> None:
    """fastmcp's logger writes to stderr through its own (rich) handler and does not propagate;
    an OpenAPI upstream's lines belong in mcpgw's log, in its format (`observe.logs`)."""
    fastmcp_logger = logging.getLogger("fastmcp")
    for handler in list(fastmcp_logger.handlers):
        fastmcp_logger.removeHandler(handler)
    fastmcp_logger.propagate = True
    # Their errors about a spec they cannot read are the `ConfigError` raised here, said once.
    logging.getLogger("fastmcp.utilities.openapi.parser").setLevel(logging.CRITICAL)


def _reason(exc: BaseException) -> str:
    """Where in the spec and what, from the pydantic errors fastmcp's parser wraps; else its message."""
    from pydantic import ValidationError

    cause = exc if isinstance(exc, ValidationError) else exc.__cause__
    if isinstance(cause, ValidationError):
        errors = cause.errors(include_url=False)
        shown = [f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return "; ".join(shown) + more
    lines = (str(exc).strip() or type(exc).__name__).splitlines()
    return lines[0][:500] + (f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else "")
