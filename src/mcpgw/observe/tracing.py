"""OpenTelemetry traces of the call path, following the semantic conventions for MCP and GenAI.

Owns: whether this process traces (`start`, once, from `mcpgw serve`), the spans the call path
opens (`request`, one per client request; `span`, its children: the upstream call, the data
rules, sampling and its model call), where a request's trace continues from (`_meta.traceparent`
first, as the MCP conventions ask, else the HTTP `traceparent` header), and carrying the context
on: `context`/`attached` for work another task does for a request (an upstream's sampling
request), `header_hook` for HTTP upstreams (the mcp SDK already puts it in every upstream
request's `_meta`).

Off by default, and then nearly free: every entry point checks one module global and returns
at once. Only the OpenTelemetry API is imported here (the mcp SDK imports it anyway); the SDK
and the OTLP exporter, a few hundred milliseconds of imports, load only when `start` turns
tracing on (`observe.otel`, the `otel` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from mcpgw.observe.otel import Started

TRACER_NAME = "mcpgw"
MAX_TEXT = 1024
"""The most characters of a client's own text (a tool name, a URI) a span attribute holds."""

_tracer: Tracer | None = None
"""The gateway's tracer while tracing is on; None: off (every function here returns at once)."""

_KINDS = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}


def start(*, traces: bool, endpoint: str | None = None, service_name: str = "mcpgw") -> Started | None:
    """Turn tracing on for this process when `traces` (or `OTEL_TRACES_EXPORTER=otlp`) asks for it.

    `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keep it off whatever the file says.
    Returns what to shut down (flushing the spans not yet sent) when serving ends; None when off.
    Raises `ConfigError` for a setting the exporter cannot honour, or a missing `otel` extra.
    """
    global _tracer
    from mcpgw.observe import otel

    settings = otel.resolve(traces=traces, endpoint=endpoint, service_name=service_name)
    if settings is None:
        return None
    started = otel.install(settings)
    _tracer = started.provider.get_tracer(TRACER_NAME)
    return started


def stop(started: Started | None) -> None:
    """Send what is left and stop tracing (the end of `mcpgw serve`)."""
    global _tracer
    _tracer = None
    if started is not None:
        started.shutdown()


def on() -> bool:
    return _tracer is not None


NO_SPAN: AbstractContextManager[None] = nullcontext()
"""No span (tracing off, or nothing to trace): one `nullcontext` serves every caller, as it holds no
state, where a generator-made context manager per request would cost CPU on every call."""


@contextmanager
def request(
    method: str,
    *,
    target: str | None,
    meta: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    attributes: Mapping[str, Any],
) -> Iterator[Span | None]:
    """The span of one client request (kind SERVER), current for the block; None when off.

    Its parent is the client's `_meta.traceparent`, else the HTTP request's `traceparent` header,
    else none (a new trace). `target`: the tool or prompt name the client gave (the span name's
    low-cardinality part, as the conventions say; never a URI).
    """
    tracer = _tracer
    if tracer is None:
        yield None
        return
    parent = _extract(meta)
    if parent is None and headers is not None:
        parent = _extract(headers)
    name = f"{method} {target}" if target else method
    with tracer.start_as_current_span(
        name,
        kind=SpanKind.SERVER,
        context=parent,
        attributes=dict(attributes),
        # The handler turns errors into MCP errors and says so (`failed`): the span records the
        # JSON-RPC code a client saw, not a Python traceback that may quote the request.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextmanager
def span(
    name: str, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None
) -> Iterator[Span | None]:
    """A child of the current span (`kind`: server, client or internal), current for the block.

    An exception leaving the block marks the span as failed with its type (`error.type`).
    """
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name,
        kind=_KINDS[kind],
        attributes=dict(attributes) if attributes else None,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            failed(current, type(exc).__name__, str(exc))
            raise


def request_attributes(
    method: str,
    *,
    protocol: str | None,
    request_id: object,
    name: str | None,
    uri: str | None,
    session: str | None,
    over_http: bool,
) -> dict[str, Any]:
    """A client request's attributes, as the MCP conventions name them (None values left out).

    What the client chose (the name, the URI) is cut to `MAX_TEXT` characters: a span is no place
    for a megabyte a client sent as a tool name.
    """
    name = name[:MAX_TEXT] if name is not None else None
    uri = uri[:MAX_TEXT] if uri is not None else None
    attributes: dict[str, Any] = {
        "mcp.method.name": method,
        "mcp.protocol.version": protocol,
        "jsonrpc.request.id": str(request_id) if request_id is not None else None,
        "mcp.session.id": session,
        "mcp.resource.uri": uri,
        "network.transport": "tcp" if over_http else "pipe",
        "network.protocol.name": "http" if over_http else None,
    }
    if method == "tools/call":
        attributes["gen_ai.operation.name"] = "execute_tool"
        attributes["gen_ai.tool.name"] = name
    elif method == "prompts/get":
        attributes["gen_ai.prompt.name"] = name
    return {k: v for k, v in attributes.items() if v is not None}


def failed(span: Span | None, error_type: str, message: str | None = None) -> None:
    """Mark `span` as failed: `error.type` and an ERROR status (no-op for None)."""
    if span is None:
        return
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message))


def annotate(span: Span | None, attributes: Mapping[str, Any]) -> None:
    """Add `attributes` to `span`, leaving out those that are None (no-op for None)."""
    if span is None:
        return
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def rename(span: Span | None, name: str) -> None:
    """Give `span` the name known only once the request was served (no-op for None)."""
    if span is not None:
        span.update_name(name)


def trace_id(span: Span | None) -> str | None:
    """`span`'s trace id as 32 hex digits (what the JSON log lines carry); None for None."""
    if span is None:
        return None
    return format(span.get_span_context().trace_id, "032x")


def context() -> object | None:
    """The current trace context, for work another task does on this request's behalf (None: off)."""
    if _tracer is None:
        return None
    return otel_context.get_current()


@contextmanager
def attached(captured: object | None) -> Iterator[None]:
    """Run the block under a context `context()` captured (a no-op for None)."""
    if captured is None or _tracer is None:
        yield
        return
    token = otel_context.attach(captured)  # type: ignore[arg-type]
    try:
        yield
    finally:
        otel_context.detach(token)


def _extract(carrier: Mapping[str, Any] | None) -> otel_context.Context | None:
    """The context a `traceparent` in `carrier` names; None when it names none (or a malformed one)."""
    if not carrier:
        return None
    try:
        extracted = propagate.extract(carrier)
    except (TypeError, ValueError, AttributeError):
        return None
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


_TRACE_KEYS = ("traceparent", "tracestate")
_MARK = b'"traceparent"'


async def header_hook(request: Any) -> None:
    """httpx request hook: an MCP message's `_meta.traceparent` (and `tracestate`) as HTTP headers too.

    Why from the body and not the current context: the mcp SDK's HTTP transports post from tasks
    of their own, and the body is what the SDK stamped with the context of this very message, so
    the header and `_meta` always name the same span, for a request, a reply or a notification.
    """
    if _tracer is None:
        return
    body = getattr(request, "content", b"")
    if not body or _MARK not in body:
        return
    try:
        message = json.loads(body)
    except ValueError:
        return
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return
    for key in _TRACE_KEYS:
        value = meta.get(key)
        if isinstance(value, str):
            request.headers[key] = value
