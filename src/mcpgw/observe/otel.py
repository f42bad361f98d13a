"""Turning traces on: the OpenTelemetry SDK, its OTLP/HTTP exporter, and the `OTEL_*` variables.

Owns: deciding from `[telemetry]` and the standard variables whether this process traces and
where the spans go (`resolve`), and installing the SDK's tracer provider with a batching OTLP
exporter (`install`). Imported only when tracing is on: the SDK and the exporter (protobuf
included) took 190-300 ms to import on the development machine, which a gateway that does not
trace should not pay at every start. They are the `otel` extra (`pip install 'mcpgw-gateway[otel]'`).

The exporter reads its own variables (`OTEL_EXPORTER_OTLP_*`: endpoint, headers, timeout,
compression, certificates) and the provider its sampler (`OTEL_TRACES_SAMPLER`, `_ARG`); the
variables win over the file, as everywhere in OpenTelemetry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mcpgw.errors import ConfigError

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_KEY = "[telemetry] traces"


@dataclass(frozen=True)
class TraceSettings:
    """What `install` needs: the traces endpoint to use (None: the exporter's own choice) and the
    service name (None: `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names it)."""

    endpoint: str | None
    service_name: str | None


@dataclass
class Started:
    """A running tracer provider: `shutdown` sends the spans still queued and stops exporting."""

    provider: Any
    endpoint: str

    def shutdown(self) -> None:
        self.provider.shutdown()


def resolve(*, traces: bool, endpoint: str | None, service_name: str) -> TraceSettings | None:
    """Whether to trace, from the file's `traces` and the standard variables; None: off.

    `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` turn it off, `OTEL_TRACES_EXPORTER=otlp`
    on. Any other exporter, or an OTLP protocol other than HTTP/protobuf, is refused (`ConfigError`)
    rather than silently sending nothing.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return None
    if exporter not in ("", "otlp"):
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={exporter}: mcpgw exports traces over OTLP only (otlp, or none)", key=_KEY
        )
    if not traces and exporter != "otlp":
        return None
    for variable in _PROTOCOL_VARS:
        protocol = os.environ.get(variable, "").strip().lower()
        if protocol and protocol != "http/protobuf":
            raise ConfigError(
                f"{variable}={protocol}: mcpgw exports OTLP over HTTP with protobuf only (http/protobuf)",
                key=_KEY,
            )
    chosen = None
    if endpoint is not None and not any(os.environ.get(v) for v in _ENDPOINT_VARS):
        chosen = endpoint.rstrip("/") + "/v1/traces"
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    return TraceSettings(endpoint=chosen, service_name=None if named else service_name)


def install(settings: TraceSettings) -> Started:
    """The SDK's tracer provider, exporting in batches over OTLP/HTTP, as the process's global one.

    Global because the mcp SDK's own spans and its `_meta` propagation use the global provider:
    with it, the upstream call's context reaches every upstream.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            f"tracing needs the OpenTelemetry SDK and its OTLP exporter ({exc.name} is missing): "
            "pip install 'mcpgw-gateway[otel]'",
            key=_KEY,
        ) from exc
    from mcpgw import version

    attributes: dict[str, str] = {"service.version": version()}
    if settings.service_name is not None:
        attributes["service.name"] = settings.service_name
    # The sampler the OTEL_TRACES_SAMPLER variables choose, read from a provider that is never used.
    chosen = TracerProvider(shutdown_on_exit=False).sampler
    provider = TracerProvider(resource=Resource.create(attributes), sampler=_requests_only(chosen))
    exporter = OTLPSpanExporter(endpoint=settings.endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return Started(provider=provider, endpoint=_endpoint_of(settings))


def _endpoint_of(settings: TraceSettings) -> str:
    """Where the exporter sends spans, as its variables decide (for the start-up log line)."""
    if settings.endpoint is not None:
        return settings.endpoint
    if os.environ.get(_ENDPOINT_VARS[0]):
        return os.environ[_ENDPOINT_VARS[0]]
    base = os.environ.get(_ENDPOINT_VARS[1]) or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


_SDK_SEND = "MCP send "
"""How the mcp SDK names the span of each request it sends (mcp 2.3, `jsonrpc_dispatcher`)."""


def _requests_only(inner: Any) -> Any:
    """`inner`, except that the mcp SDK's spans for requests no client request caused are dropped.

    The SDK opens a span for every request it sends: under a client request that is the hop to
    the upstream, and it is kept; outside one it is the gateway's own traffic (upstream handshakes,
    pings, list refreshes), which would otherwise start a trace of its own every ping interval.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class RequestsOnly(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if (
                name.startswith(_SDK_SEND)
                and not trace.get_current_span(parent_context).get_span_context().is_valid
            ):
                return SamplingResult(Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)  # type: ignore[no-any-return]

        def get_description(self) -> str:
            return f"RequestsOnly{{{inner.get_description()}}}"

    return RequestsOnly()
