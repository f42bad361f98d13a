"""The gateway's own log: where it goes, and its two formats.

Owns: `configure`, the one place the process's logging is set up (stderr, because on
stdio stdout is the MCP channel), the text format people read, and `JsonFormatter`,
one JSON object per line for log collectors, with the request's fields
(`observe.context`) on every line: request id, trace id, persona and server, null
where not known (a line about no request, or before the request was routed).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from mcpgw.observe import context

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_NOISY = ("mcp", "uvicorn", "httpx", "httpx2")
"""Loggers whose INFO lines (per session, per connection) would drown the gateway's own."""


def counted(number: float, noun: str) -> str:
    """`number` and `noun` as a person writes them: "1 tool", "0 tools", "2 resource templates",
    "1 day", "0.5 days" (a float as `:g` writes it)."""
    shown = f"{number:g}" if isinstance(number, float) else f"{number}"
    return f"{shown} {noun}" if number == 1 else f"{shown} {noun}s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request's fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        fields = context.current()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": fields.request_id,
            "trace_id": fields.trace_id,
            "persona": fields.persona,
            "server": fields.server,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a message argument that is not JSON (an exception, a path) is still one line.
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO, *, fmt: LogFormat = "text") -> None:
    """The process's log goes to stderr, as text or as JSON lines, from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
