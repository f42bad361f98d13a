"""What the gateway tells its operators about itself, besides the audit log.

The package's modules, one job each:

    context   the current request's fields (request id, trace id, persona, server, tool, upstream
              time), one context variable the pipeline, the log format, metrics and traces share
    logs      the gateway's own log on stderr: text, or one JSON object per line (`--log-format json`)
    metrics   the Prometheus metrics of one gateway: its own `CollectorRegistry`, the counters and
              histograms the call path feeds, and the gauges read from the gateway when scraped
    tracing   OpenTelemetry spans of the call path and the trace context carried through it
              (the API only: nearly free while off)
    otel      turning traces on: the SDK and its OTLP/HTTP exporter, from `[telemetry]` and the
              `OTEL_*` variables (imported only then)

It sits below everything but errors: any layer may fill in the context or count an event,
and nothing here knows the gateway's types.
"""
