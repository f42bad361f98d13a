"""`[telemetry]`: what the gateway tells operators about itself besides the audit log.

Owns: whether Prometheus metrics are served and where (`/metrics` on the HTTP listener, or a
listener of their own, the only way for stdio serving), and the format of the gateway's own log.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

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
