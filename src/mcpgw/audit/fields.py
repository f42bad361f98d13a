"""How a row's text is made safe to store and to show: redacted, control characters escaped, bounded.

Owns: the bound of each text column; the order of the steps (redact first, over the whole text
up to `SCAN_CHARS`, so a secret the bound would cut in two is still found; then escape and
bound); the escape (a control, format or other invisible character becomes visible text: ESC
is stored as the four characters `\\x1b`, a newline as `\\n`, U+202E as `\\u202e`); and the
bound's marker (`…[cut: N chars]`, N the original length). A backslash is left as it is: the
point is that nothing stored can drive a terminal, not that the original can be rebuilt.

The writer (`log`) stores text only through `stored`; `queries.printable` applies `shown` to
rows read back, for rows an older mcpgw wrote or anything else put in the file.
"""

from __future__ import annotations

from collections.abc import Iterable

from mcpgw.audit.redact import Redactor
from mcpgw.audit.schema import COLUMNS

FIELD_CHARS = 300
"""name, method, persona, client, principal, server, protocol, request id, findings."""
ERROR_CHARS = 500
SUMMARY_CHARS = 300
"""The result summary of a request row."""
ARGUMENTS_CHARS = 4000
EVENT_RESULT_CHARS = 4000
"""An event's own accounting (sampling), kept as valid JSON."""
SCAN_CHARS = 65_536
"""Redaction reads this far into a text; what lies beyond is never stored anyway."""

_BOUNDS = {"error": ERROR_CHARS, "arguments": ARGUMENTS_CHARS, "result": EVENT_RESULT_CHARS}
LIMITS: dict[str, int] = {
    column: _BOUNDS.get(column, FIELD_CHARS)
    for column, kind in COLUMNS.items()
    if kind is str and column != "ts"  # the writer's own clock: not cleaned, bounded as an error would be
}
"""Every text column and its bound (a request's result summary is cut shorter, at `SUMMARY_CHARS`)."""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """`text` with every character that is not printable (controls, format and separator characters
    such as ESC, DEL, C1 codes, bidi overrides, zero-width characters) written as its escape."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_one(char) for char in text)


def _escape_one(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: str, limit: int, *, length: int | None = None) -> str:
    """`text` escaped, in at most `limit` characters: whole, or its start and the marker (nothing is
    redacted here: for rows read back). `length`: the original's, when `text` is already a part."""
    length = len(text) if length is None else length
    escaped = escape(text[: limit * 10])  # escaping lengthens a text at most tenfold
    if len(escaped) <= limit and length <= len(text):
        return escaped
    marker = f"…[cut: {length} chars]"
    return escaped[: max(0, limit - len(marker))] + marker


def stored(text: str | None, limit: int, redactor: Redactor, *, literals: Iterable[str] = ()) -> str | None:
    """What a column holds for `text`: redacted, then escaped and bounded (None stays None)."""
    if text is None:
        return None
    return shown(redactor.text(text[:SCAN_CHARS], literals), limit, length=len(text))


class Fields:
    """`stored(text, FIELD_CHARS, redactor)` for the short columns a connection repeats on every row
    (method, persona, client, protocol, session, tool name): each distinct text redacted once.

    Why: redacting a row's nine short columns was most of the writer thread's CPU per call, for texts
    that are the same call after call. The redactor has no state, so a text's column value is fixed;
    at most `size` texts are kept (all dropped when full: the next rows fill it again).
    """

    def __init__(self, redactor: Redactor, *, size: int = 4096) -> None:
        self._redactor = redactor
        self._size = size
        self._known: dict[str, str | None] = {}
        self._rows: dict[tuple[str | None, ...], tuple[str | None, ...]] = {}

    def many(self, texts: tuple[str | None, ...]) -> tuple[str | None, ...]:
        """`stored` of each of `texts`: a row's short columns, which repeat together call after call
        (one lookup for the lot instead of one per column)."""
        known = self._rows.get(texts)
        if known is None:
            known = tuple(self.stored(text) for text in texts)
            if sum(len(text) for text in texts if text is not None) <= FIELD_CHARS * 4:  # huge ones: once
                if len(self._rows) >= self._size:
                    self._rows.clear()
                self._rows[texts] = known
        return known

    def stored(self, text: str | None) -> str | None:
        if text is None:
            return None
        known = self._known.get(text, self)
        if known is self:
            if len(self._known) >= self._size:
                self._known.clear()
            known = self._known[text] = stored(text, FIELD_CHARS, self._redactor)
        return known  # type: ignore[return-value]
