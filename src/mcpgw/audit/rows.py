"""Turning steps and events into rows of the `events` table: redacted, escaped and bounded.

Owns: a row's values in `schema.COLUMNS` order (what `store.Connection.insert` takes), every
text column cleaned through `fields` (here, nowhere else), an event's accounting kept as JSON
with its strings cleaned, and a sampling row's spend as columns. The writer (`log`) builds the
rows on its own thread, off the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from mcpgw.audit.fields import (
    ARGUMENTS_CHARS,
    ERROR_CHARS,
    EVENT_RESULT_CHARS,
    FIELD_CHARS,
    SCAN_CHARS,
    SUMMARY_CHARS,
    Fields,
    shown,
    stored,
)
from mcpgw.audit.redact import Redactor
from mcpgw.audit.schema import COLUMNS, SPEND_KEYS
from mcpgw.audit.step import Kind, Step, now

Values = tuple[Any, ...]
"""A row's values, in `schema.COLUMNS` order (as `store.Connection.insert` takes them)."""
_REPEATED = ("method", "persona", "client", "protocol", "server", "name", "findings")
"""The short columns a connection repeats row after row: cleaned together, once (`Fields.many`). The
session and the principal are cleaned apart, by `Redactor.for_ids` (they are looked up as given)."""
_NO_SPEND = (None,) * len(SPEND_KEYS)


class Rows:
    """Rows for one log: its redactor, and the name of the gateway written on every row."""

    def __init__(self, redactor: Redactor, *, instance: str | None) -> None:
        self.redactor = redactor
        self.instance = instance
        self.fields = Fields(redactor)
        self.ids = Fields(redactor.for_ids())

    def _text(self, row: dict[str, Any], literals: Iterable[str] = ()) -> dict[str, Any]:
        """Every text column of `row` redacted, escaped and bounded (arguments and result aside)."""
        # The gateway's own id, which rows are joined on: never redacted (a run of hex digits can
        # pass for a card number), only bounded.
        row["request_id"] = shown(row["request_id"], FIELD_CHARS)
        row["parent"] = shown(row["parent"], FIELD_CHARS) if row["parent"] is not None else None
        row["instance"] = self.fields.stored(self.instance)
        row.update(zip(_REPEATED, self.fields.many(tuple(row[column] for column in _REPEATED)), strict=True))
        row["session"] = self.ids.stored(row["session"])
        row["principal"] = self.ids.stored(row["principal"])
        # What an upstream says may echo a secret argument back: those values go wherever they appear.
        row["error"] = stored(row["error"], ERROR_CHARS, self.redactor, literals=literals)
        return row

    def accounting(self, value: Any) -> Any:
        """An event's result with its strings cleaned; still JSON (sampling spend is read back from it)."""
        if isinstance(value, Mapping):
            return {str(k)[:FIELD_CHARS]: self.accounting(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.accounting(v) for v in value[:100]]
        if isinstance(value, str):
            return stored(value, FIELD_CHARS, self.redactor)
        return value

    def event(self, row: dict[str, Any]) -> Values:
        row = self._text(row)
        if row["result"] is not None:
            text = json.dumps(row["result"], ensure_ascii=False, default=str)
            if len(text) > EVENT_RESULT_CHARS:  # still JSON: its numbers, not its strings
                numbers = {k: v for k, v in row["result"].items() if isinstance(v, int | float)}
                text = json.dumps({**numbers, "cut": len(text)})
            row["result"] = text
        return tuple(row.get(column) for column in COLUMNS)

    def step(self, step: Step) -> Values:
        """`step` as the row's values in `schema.COLUMNS` order, cleaned as `_text` cleans an event's
        (built as a tuple, not a dict: this runs for every request)."""
        secrets = self.redactor.secret_values(step.arguments) if step.arguments is not None else []
        arguments = _dump(self.redactor.value(step.arguments)) if step.arguments is not None else None
        result = _dump(step.result)[: SUMMARY_CHARS * 4] if step.result is not None else None
        method, persona, client, protocol, server, name, findings = self.fields.many(
            (
                step.method,
                step.persona,
                step.client,
                step.protocol,
                step.server,
                step.name,
                step.findings,
            )
        )
        return (
            step.ts if step.ts is not None else now(step.clock),
            self.fields.stored(self.instance),
            shown(step.request_id, FIELD_CHARS),  # as in `_text`: never redacted, only bounded
            shown(step.parent, FIELD_CHARS) if step.parent is not None else None,
            step.kind.value,
            method,
            persona,
            self.ids.stored(step.principal),
            self.ids.stored(step.session),
            client,
            protocol,
            server,
            name,
            step.outcome.value,
            # What an upstream says may echo a secret argument back: those values go wherever they appear.
            stored(step.error, ERROR_CHARS, self.redactor, literals=secrets),
            round(step.latency_ms, 3),
            len(arguments.encode()) if arguments else 0,
            len(result.encode()) if result else 0,
            # The arguments were redacted value by value above; here they are only escaped and bounded.
            shown(arguments[:SCAN_CHARS], ARGUMENTS_CHARS, length=len(arguments)) if arguments else None,
            stored(result, SUMMARY_CHARS, self.redactor, literals=secrets) if result else None,
            findings,
            *_NO_SPEND,
        )


def spend(kind: Kind, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """A sampling (or draft) row's tokens and cost as columns (also kept in its `result`); numbers only."""
    values: dict[str, Any] = dict.fromkeys(SPEND_KEYS)
    if kind in (Kind.SAMPLING, Kind.DRAFT) and result is not None:
        for key, cast in (("input_tokens", int), ("output_tokens", int), ("cost_usd", float)):
            value = result.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[key] = cast(value)
    return values


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"))
"""`json.dumps` with these options makes an encoder per call: one, made once."""


def _dump(value: Any) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError):
        return str(value)
