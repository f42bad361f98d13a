"""The times a reader of the audit log may give (`--since`, `--until`): parsed, or refused.

Owns: turning what a user types into the instant the `ts` column is compared with.
Rows store `ts` as UTC ISO 8601 with microseconds (`step.now`); a bound is turned into
exactly that shape, so the comparison of the two strings is a comparison of instants.

Accepted: a duration back from now (`90s`, `30m`, `1h`, `2d`, `1w`, also `1.5h`, `2 days`);
`now`, `today` and `yesterday` (local midnight); an ISO date or date-time, with `T` or a
space between them, with or without seconds and fractions. A time without an offset is
local time; `Z` or `+01:00` says otherwise. Anything else is a `ValueError` naming the
forms above: a time compared as a string would match everything or nothing, silently.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

FORMS = (
    "a duration (30m, 1h, 2d, 1w), today, yesterday, or an ISO time (2026-11-30, 2026-11-30 01:19, "
    "2026-11-30T01:19:00Z); times without an offset are local"
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(
    r"^(\d+(?:\.\d+)?)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)(?:\s+ago)?$"
)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def stored(moment: datetime) -> str:
    """`moment` in the shape the `ts` column holds (UTC, microseconds)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse(text: str, *, end: bool = False, now: datetime | None = None) -> str:
    """The instant `text` names, shaped like `ts`. `end`: a bare date (or `today`, `yesterday`)
    names the end of that day, so `--until 2026-11-30` includes the 30th."""
    moment = now or datetime.now(UTC)
    word = text.strip().lower()
    local_today = moment.astimezone().date()
    if word == "now":
        return stored(moment)
    if word in ("today", "yesterday"):
        day = local_today - timedelta(days=word == "yesterday")
        return stored(_midnight(day + timedelta(days=end)))
    if match := _DURATION.match(word):
        amount, unit = float(match.group(1)), match.group(2)[0]
        return stored(moment - timedelta(seconds=amount * _UNITS[unit]))
    iso = text.strip()
    try:
        if _DATE_ONLY.match(iso):
            return stored(_midnight(date.fromisoformat(iso) + timedelta(days=end)))
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; use {FORMS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time, as the user's clock shows it
    return stored(parsed)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time()).astimezone()


def shown(ts: str) -> str:
    """A stored `ts` as local time to the millisecond, the way `parse` reads it back."""
    try:
        return datetime.fromisoformat(ts).astimezone().isoformat(sep=" ", timespec="milliseconds")[:23]
    except ValueError:
        return ts[:23]
