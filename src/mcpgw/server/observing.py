"""What operators see of each request besides its audit row: its span and its metrics.

Owns: the request's span (tracing on; its trace id on the request's fields, so log lines carry
it), the span's final name and outcome, and the request's count in the Prometheus metrics (a
listing's too, which the listing cache mostly answers: `listings_counted`). Names in spans and
labels come from the catalog only (`catalog_name`): a client cannot mint them; a persona is named
as the gateway resolves it (`persona_label`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from mcp.server.context import ServerMiddleware, ServerRequestContext
from pydantic import BaseModel

from mcpgw import audit
from mcpgw.core.gateway import Gateway
from mcpgw.errors import GatewayError
from mcpgw.observe import context as observe
from mcpgw.observe import tracing
from mcpgw.server.listcache import ListingCache

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from mcpgw.observe.metrics import Metrics

Ctx = ServerRequestContext[Any, Any]
Answer = BaseModel | dict[str, Any] | None
"""What a server middleware's `call_next` returns."""


def request_span(gateway: Gateway, ctx: Ctx, step: audit.Step) -> AbstractContextManager[Span | None]:
    """The request's span (tracing on), its trace id on the request's fields (the log lines').

    The span's name holds a tool or prompt name only if the catalog has it, as the metrics' labels
    do: a client cannot mint span names (the name it sent is an attribute, bounded).
    """
    return _span(gateway, ctx, step) if tracing.on() else tracing.NO_SPAN


@contextmanager
def _span(gateway: Gateway, ctx: Ctx, step: audit.Step) -> Iterator[Span | None]:
    headers = getattr(ctx.request, "headers", None)
    named = step.kind in (audit.Kind.CALL, audit.Kind.PROMPT)
    target = catalog_name(gateway, step) if named else None
    attributes = tracing.request_attributes(
        ctx.method,
        protocol=ctx.protocol_version,
        request_id=ctx.request_id,
        name=step.name if named else None,
        uri=step.name if step.kind in (audit.Kind.READ, audit.Kind.SUBSCRIBE) else None,
        session=headers.get("mcp-session-id") if headers is not None else None,
        over_http=headers is not None,
    )
    attributes["mcpgw.request_id"] = step.request_id
    if step.persona is not None:
        attributes["mcpgw.persona"] = step.persona
    with tracing.request(
        ctx.method,
        target=target,
        meta=ctx.meta if isinstance(ctx.meta, Mapping) else None,
        headers=headers,
        attributes=attributes,
    ) as span:
        observe.current().trace_id = tracing.trace_id(span)
        yield span


def finish_span(span: Span, gateway: Gateway, ctx: Ctx, step: audit.Step, fields: observe.Fields) -> None:
    """Where the request went and how it ended, on its span; its name, now the catalog is known.

    A call that arrived while its upstream was still starting was named before the catalog had it.
    """
    tracing.annotate(span, {"mcpgw.server": fields.server, "mcpgw.outcome": step.outcome.value})
    if step.kind in (audit.Kind.CALL, audit.Kind.PROMPT):
        tracing.rename(span, f"{ctx.method} {fields.tool or catalog_name(gateway, step)}")


def catalog_name(gateway: Gateway, step: audit.Step) -> str:
    """A call's or prompt's name if the catalog has it, else `(unknown)`: a client cannot mint it."""
    routes = gateway.catalog.tool_routes if step.kind is audit.Kind.CALL else gateway.catalog.prompt_routes
    return step.name if step.name is not None and step.name in routes else observe.UNKNOWN


def count(metrics: Metrics, gateway: Gateway, ctx: Ctx, step: audit.Step, fields: observe.Fields) -> None:
    tool = fields.tool
    if tool is None and step.kind in (audit.Kind.CALL, audit.Kind.PROMPT):
        # Not routed (unknown, hidden or withheld): the name is a label only if the catalog has it.
        routes = (
            gateway.catalog.tool_routes if step.kind is audit.Kind.CALL else gateway.catalog.prompt_routes
        )
        tool = step.name if step.name in routes else observe.UNKNOWN
    metrics.request(
        method=ctx.method,
        persona=step.persona,
        server=fields.server,
        tool=tool,
        outcome=step.outcome.value,
        seconds=time.perf_counter() - step.started,
        upstream_seconds=fields.upstream_seconds,
    )


def persona_label(gateway: Gateway, persona: str | None) -> str | None:
    """The persona a request is recorded and counted under: as resolved, or as named if unknown."""
    try:
        return gateway.resolve_persona(persona)
    except GatewayError:
        return persona


def listings_counted(
    gateway: Gateway, metrics: Metrics, persona_of: Callable[[Ctx], str | None]
) -> ServerMiddleware[Any]:
    """Server middleware, in front of the listing cache: every listing is counted, though the cache
    answers most of them without reaching a handler."""

    async def middleware(ctx: Ctx, call_next: Callable[[Ctx], Awaitable[Answer]]) -> Answer:
        if ctx.method not in ListingCache.METHODS:
            return await call_next(ctx)
        began, outcome = time.perf_counter(), audit.Outcome.ERROR
        try:
            result = await call_next(ctx)
            outcome = audit.Outcome.OK
            return result
        except BaseException as exc:
            if not isinstance(exc, Exception):
                outcome = audit.Outcome.CANCELLED
            raise
        finally:
            metrics.request(
                method=ctx.method,
                persona=persona_label(gateway, persona_of(ctx)),
                server=None,
                tool=None,
                outcome=outcome.value,
                seconds=time.perf_counter() - began,
                upstream_seconds=0.0,
            )

    return middleware
