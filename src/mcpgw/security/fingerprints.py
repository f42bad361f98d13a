"""Fingerprints of private values, and finding them again in what an agent sends out.

Owns: what counts as a value in a result (`values_of`), its fingerprint, and the match of
fingerprints against a tool call's arguments (`Fingerprints.find`).

A value is a leaf of structured content (or of a text content that is JSON), a line of a
text, and each field of a line split at `:`, `=`, `,`, `;`, `|` or a tab: `Email: a@b.example`
gives the line, `Email` and `a@b.example`. Texts are compared as their runs of letters and digits,
case-folded, so `4111-1111-1111-1111` matches `4111 1111 1111 1111`, and a value's run of n
tokens is found anywhere inside a longer text by sliding an n-token window over it. A value of
more than `SPAN` tokens is kept as its overlapping `SPAN`-token shingles: copying any `SPAN`
consecutive words of it is caught (of a text with more shingles than half a session's
`max_fingerprints`, every k-th shingle is kept, and a copied run of `SPAN + k - 1` words is
caught). Single tokens that look like identifiers (a digit or more and at least `min_length`
characters: account numbers, keys) are kept on their own too, so one found inside prose is caught.

Only fingerprints are kept (Python's salted `hash` of the token tuple, per process), never the
values: the gateway holds no copy of the private data. A fingerprint may collide with another
value's (64 bits: about one in 10^19 per pair), which would refuse a harmless call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

SPAN = 8
"""Values up to this many tokens are matched whole; longer ones by shingles of this many tokens."""
SCAN_CHARS = 1 << 20
"""Characters of one result read for values (a result over 1 MiB is fingerprinted in its first MiB)."""

_TOKEN = re.compile(r"[^\W_]+")
_FIELD = re.compile(r"[:=,;|\t]")
_LINE = re.compile(r"[\r\n]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


def values_of(value: Any, *, budget: int = SCAN_CHARS) -> Iterator[str]:
    """Every value in a tool result or resource read (see the module docstring), up to `budget` chars."""
    left = budget
    for text in _texts(value):
        if left <= 0:
            return
        text = text[:left]
        left -= len(text)
        yield from _fields(text)


_PROTOCOL = frozenset({"type", "mimeType", "uri", "_meta", "isError", "annotations"})
"""Keys of a result that hold the protocol's own words, not data: not fingerprinted."""


def _texts(value: Any, skip: frozenset[str] = _PROTOCOL) -> Iterator[str]:
    """The leaves of a value: strings and numbers, with JSON text read as its leaves."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in skip:
                yield from _texts(item, skip)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item, skip)
    elif isinstance(value, str):
        stripped = value.lstrip()
        if stripped[:1] in ("{", "[") and len(value) <= SCAN_CHARS:
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict | list):
                yield from _texts(parsed, skip)
                return
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def _fields(text: str) -> Iterator[str]:
    yield text
    for line in _LINE.split(text):
        if line != text:
            yield line
        parts = _FIELD.split(line)
        if len(parts) > 1:
            yield from parts


class Fingerprints:
    """One session's fingerprints, oldest forgotten first past `limit`; each says which step it came from."""

    def __init__(self, *, limit: int, min_length: int) -> None:
        self._limit = limit
        self._min = min_length
        self._seen: dict[int, int] = {}
        """Fingerprint -> the session step that returned the value (insertion order: oldest first)."""
        self._spans: set[int] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, values: Iterable[str], step: int) -> None:
        for span, fingerprint in self._of(values):
            self._seen.pop(fingerprint, None)  # re-seen: now the newest
            self._seen[fingerprint] = step
            self._spans.add(span)
        while len(self._seen) > self._limit:
            del self._seen[next(iter(self._seen))]

    def _of(self, values: Iterable[str]) -> Iterator[tuple[int, int]]:
        done: set[tuple[str, ...]] = set()
        for value in values:
            words = tokens(value)
            if not words or sum(map(len, words)) + len(words) - 1 < self._min:
                continue
            if len(words) <= SPAN:
                runs = [tuple(words)]
                if len(words) > 1 and all(w.isdigit() for w in words):
                    runs.append(("".join(words),))  # 4111 1111 ... written as one number
            else:
                # Only the newest `limit` fingerprints are kept: a text with more shingles than half
                # that is shingled with a stride (a copied run must then be a few words longer).
                count = len(words) - SPAN + 1
                stride = -(-count // max(1, self._limit // 2))
                runs = [tuple(words[i : i + SPAN]) for i in range(0, count, stride)]
            least = self._min
            runs += [(w,) for w in set(words) if len(w) >= least and not w.isalpha()]
            for run in runs:
                if run not in done:
                    done.add(run)
                    yield len(run), hash(run)

    def find(self, value: Any) -> int | None:
        """The step whose private value appears in `value` (any string or number in it), or None."""
        if not self._seen:
            return None
        for text in _texts(value, frozenset()):  # arguments: every key may carry data out
            words = tokens(text)
            for span in self._spans:
                for i in range(len(words) - span + 1):
                    step = self._seen.get(hash(tuple(words[i : i + span])))
                    if step is not None:
                        return step
        return None
