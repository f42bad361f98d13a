"""`[telemetry]`: what the gateway tells operators about itself besides the audit log.

Owns: whether Prometheus metrics are served and where (`/metrics` on the HTTP listener, or a
listener of their own, the only way for stdio serving), the format of the gateway's own log, and
whether OpenTelemetry traces are sent and where (the `OTEL_*` variables win, see `observe.otel`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from mcpgw.config.base import Strict


class TelemetrySettings(Strict):
    """`[telemetry]`."""

    metrics: bool = True
    """Serve Prometheus metrics: at `/metrics` on the HTTP listener (or on `metrics_port`)."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """A listener of their own for the metrics (`/metrics` leaves the HTTP listener); the only way to
    get them when serving stdio. 0 picks a free port (logged)."""
    metrics_host: str = "127.0.0.1"
    """The address of that listener."""
    log_format: Literal["text", "json"] = "text"
    """The gateway's own log on stderr: text, or one JSON object per line (`--log-format`)."""
    traces: bool = False
    """Send OpenTelemetry traces over OTLP/HTTP (also on with `OTEL_TRACES_EXPORTER=otlp`)."""
    traces_endpoint: str | None = None
    """The OTLP/HTTP collector's base URL (`/v1/traces` is added), as `OTEL_EXPORTER_OTLP_ENDPOINT`,
    which wins over it; neither: http://localhost:4318."""
    service_name: Annotated[str, Field(min_length=1)] = "mcpgw"
    """The traces' `service.name` (`OTEL_SERVICE_NAME` wins)."""

    @field_validator("traces_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL (OTLP over HTTP)")
        return value
