"""Tool poisoning checks: signs of instructions aimed at the model in what an upstream describes.

Owns: scanning every string an upstream shows the model about its tools,
prompts, resources and resource templates (names, titles, descriptions, and
every key and string value of their schemas, arguments and annotations) for
invisible Unicode (default-ignorable code points, format and control
characters; text hidden in tag characters or variation selectors is decoded),
"ignore previous instructions"-style text, instructions to read sensitive files
or send data elsewhere, instructions in HTML comments, and excessive length.

Text is normalised before the phrases are matched, so that what a model reads
is what is checked: invisible characters dropped, NFKC (fullwidth, ligatures,
mathematical letters), accents stripped, look-alike letters of other scripts
folded to Latin, whitespace runs (newlines too) collapsed, identifiers split
(`ignore_previous`, `ignorePrevious`), HTML comments both read and cut out, and
base64 runs decoded and scanned in turn. Each `Finding` names the server, the
item, the field and the span in the field's original text (character offsets),
and never needs the network.

The checks run on `add-server`, on `pin`, and on every catalog rebuild (see
`trust.Trust`); what happens to a flagged item is decided there, by mode.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEFAULT_MAX_DESCRIPTION = 4000
"""Tuned on the official reference servers (tests/fixtures/reference_servers): their longest text is
the 2,781-character description of server-sequential-thinking's one tool, a real and benign tool;
the next is 457. 4000 leaves room for a tool of that kind and still flags pages of text."""

_LEGACY_INVISIBLE = re.compile(
    "[\U000e0000-\U000e007f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u180e\u061c\u00ad]+"
)
"""What `shown` writes out: the lock file stores `shown(description)` and checks it on load, so widening
this would make lock files written earlier fail to load. The definition text (`json_escaped`) shows all."""

_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),  # Mongolian variation selectors, vowel separator
    (0x200B, 0x200F),  # zero-width space, joiners, marks
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, isolates
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement
)
"""Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): drawn as nothing."""

_SHOWN_FORMAT = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)
"""Format characters (Cf) that are drawn: the prepended concatenation marks."""

# Python's unicodedata has no confusables data (NFKC keeps Cyrillic and Greek apart from Latin on
# purpose), and no installed package ships Unicode's confusables.txt, so this is the part of it that
# matters here: letters of other scripts that pass for a-z in common fonts. Accented letters are
# handled by dropping the marks, fullwidth and mathematical letters by NFKC. Escapes, not literals:
# a table of look-alikes cannot be reviewed by eye.
_LOOKALIKES = (
    "a\u0430\u0251\u03b1 b\u042c\u044c\u0184\u13cf c\u0441\u03f2\u03c2\u1d04\u2ca5 "
    "d\u0501\u0111 e\u0435\u04bd g\u0261\u0581 h\u04bb\u0570\u13c2\u0127 "
    "i\u0456\u0131\u03b9\u0269\u13a5 j\u0458\u03f3\u0237 k\u03ba\u043a\u1d0b "
    "l\u04cf\u01c0\u05d5\u0142 m\u043c\u1d0d n\u0578\u057c\u03b7 "
    "o\u043e\u03bf\u0585\u03c3\u1d0f\u05e1\u0665\u00f8 p\u0440\u03c1\u2ca3 q\u051b\u0566 "
    "r\u0433\u2c85 s\u0455\ua731 t\u0442\u03c4\u1d1b u\u03c5\u057d\u1d1c\u028b "
    "v\u03bd\u0475\u1d20 w\u051d\u0461\u03c9\u1d21\u0561 x\u0445\u03c7\u00d7 "
    "y\u0443\u03b3\u04af\u028f z\u1d22 A\u0410\u0391\u13aa B\u0412\u0392\u13f4 "
    "C\u0421\u03f9\u13df D\u13a0 E\u0415\u0395\u13ac F\u03dc G\u050c\u13c0 H\u041d\u0397\u13bb "
    "I\u0406\u0399\u04c0 J\u0408\u13ab K\u041a\u039a\u13e6 L\u13de M\u041c\u039c\u13b7 N\u039d "
    "O\u041e\u039f\u0555 P\u0420\u03a1\u13e2 Q\u051a R\u13d2 S\u0405\u13da T\u0422\u03a4\u13a2 "
    "U\u054d V\u0474\u13d9 W\u051c\u13b3 X\u0425\u03a7 Y\u0423\u03a5\u04ae Z\u0396\u13c3"
)
"""Each group: a Latin letter, then the letters of other scripts that pass for it."""
_FOLD_LOOKALIKES = str.maketrans({c: group[0] for group in _LOOKALIKES.split() for c in group[1:]})

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "override",
        re.compile(
            r"(?i)\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}?"
            r"\b(?:previous|prior|above|earlier|all|any|other|system|your)\b[^.\n]{0,20}?"
            r"\b(?:instructions?|prompts?|rules|directions|guidelines|context)\b"
        ),
    ),
    ("override", re.compile(r"(?i)<\s*/?\s*(?:important|system|instructions?|secret|hidden)\s*>")),
    (
        "override",
        re.compile(
            r"(?i)\b(?:do not|don't|never)\s+(?:tell|inform|mention|reveal|show|notify)\b[^.\n]{0,40}?"
            r"\b(?:user|human|operator)\b"
        ),
    ),
    ("override", re.compile(r"(?i)\b(?:new|updated|hidden) (?:system )?instructions\b|\bsystem prompt\b")),
    (
        "file-access",
        re.compile(
            r"(?i)(?:~/\.ssh|\bid_(?:rsa|ed25519|ecdsa)\b|\.aws/credentials|/etc/(?:passwd|shadow)"
            r"|\.netrc\b|\.npmrc\b|\.pypirc\b|\.kube/config|\bmcp\.json\b|\.env\b|\bprivate key\b)"
        ),
    ),
    (
        "exfiltration",
        re.compile(
            r"(?i)\b(?:send|forward|upload|post|exfiltrate|transmit|copy|email)\b[^.\n]{0,60}?"
            r"\bto\s+(?:https?://|[\w.+-]+@[\w-]+\.|this (?:url|address|endpoint|server)|the following)"
        ),
    ),
    (
        "exfiltration",
        re.compile(
            r"(?i)\b(?:contents?|conversation|history|credentials?|secrets?|keys?|tokens?|passwords?)\b"
            r"[^.\n]{0,60}?\b(?:as|in|into|via)\b[^.\n]{0,30}?\b(?:parameter|argument|field|sidenote)\b"
        ),
    ),
)

_COMMENT = re.compile(r"<!--(.*?)(?:-->|\Z)", re.DOTALL)
_DIRECTIVE = re.compile(
    r"(?i)(?:^|[.!?:;]\s)\s*(?:always|never|must|do not|don't|ignore|instead|make sure|ensure|remember|before"
    r"|after|first|then|call|invoke|use|read|send|include|pass|tell|ask|output|print|respond|reply|execute"
    r"|run|fetch|open|write|delete)\b"
    r"|\b(?:you|assistant|model|agent|ai|llm|claude)\b[^.]{0,30}?"
    r"\b(?:must|should|shall|will|are to|need to|have to|may not|cannot|can't)\b"
)
"""Instruction-like text: enough, inside an HTML comment (which a renderer hides), to flag the comment."""

_LIST_ITEM = re.compile(r"\n(?=[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])\s)")
_BASE64 = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{20,}={0,2}(?![\w+/=-])")
_MAX_BASE64 = 65536
_MAX_DEPTH = 2
"""How deep encodings are unwrapped (base64 in base64, hidden text in base64)."""

KEY_SUFFIX = " (key)"
"""Suffix of a finding's field when the span is in a key (a property's name), not in a value."""


@dataclass(frozen=True)
class Finding:
    server: str
    kind: str
    """tool, prompt, resource or resource_template."""
    name: str
    """The item's name as the upstream knows it (a URI for resources)."""
    field: str
    """Where in the item: `description`, a path like `inputSchema.properties.path.description`, or a key's
    path followed by ` (key)`."""
    start: int
    end: int
    rule: str
    """invisible-unicode, override, file-access, exfiltration, hidden-comment or length."""
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.server}: {self.kind} {self.name!r}: {self.field} "
            f"[{self.start}:{self.end}]: {self.rule}: {self.detail}"
        )


@lru_cache(maxsize=8192)
def is_invisible(char: str) -> bool:
    """Drawn as nothing: default-ignorable, a format character, or a control that is not whitespace."""
    if " " <= char <= "~":
        return False
    code = ord(char)
    if any(low <= code <= high for low, high in _DEFAULT_IGNORABLE):
        return True
    category = unicodedata.category(char)
    return (category == "Cf" and char not in _SHOWN_FORMAT) or (category == "Cc" and not char.isspace())


def _is_variation_selector(char: str) -> bool:
    return "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef"


def _expected(text: str, start: int, end: int) -> bool:
    """A lone variation selector where fonts use one: after an emoji or other symbol, a keycap's digit, or
    an ideograph (its variant); not after a letter or a space, where it can only carry hidden bytes."""
    if end - start != 1 or start == 0 or not _is_variation_selector(text[start]):
        return False
    base = text[start - 1]
    if base in "0123456789#*" or (not base.isascii() and unicodedata.category(base)[0] in "SP"):
        return True
    return text[start] >= "\U000e0100" and unicodedata.name(base, "").startswith("CJK")


def shown(text: str) -> str:
    """`text` with each invisible character written as `\\u{XXXX}`, for people to read (diffs, lock file)."""
    return _LEGACY_INVISIBLE.sub(lambda m: "".join(f"\\u{{{ord(c):04x}}}" for c in m.group()), text)


def json_escaped(text: str) -> str:
    """JSON text with invisible characters as JSON escapes: same value when parsed, visible when read."""
    out = []
    for c in text:
        if not is_invisible(c):
            out.append(c)
            continue
        code = ord(c)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


# --- normalising, with a map back to the original -------------------------------------------


@lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    if char.isascii():
        return char
    folded = unicodedata.normalize("NFKC", char.translate(_FOLD_LOOKALIKES))
    bare = "".join(c for c in unicodedata.normalize("NFD", folded) if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", bare).translate(_FOLD_LOOKALIKES)


@dataclass(frozen=True)
class _View:
    """Normalised text; `origin[i]` is the index in the original text of the character `text[i]` came from."""

    text: str
    origin: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        return self.origin[start], self.origin[max(end - 1, start)] + 1


def _fold(text: str, *, split_words: bool = False, cut: Iterable[tuple[int, int]] = ()) -> _View:
    """`text` as read: invisibles dropped, NFKC, marks stripped, look-alikes folded, whitespace collapsed.

    `split_words` also reads `_` as a space and splits camelCase; `cut` drops spans of the original.
    A line break before a list item stays a line break, which the rules do not reach across: a list
    of options is not one sentence, while words split over bare lines are.
    """
    dropped = {i for start, end in cut for i in range(start, end)}
    items = {match.start() for match in _LIST_ITEM.finditer(text)}
    out: list[str] = []
    origin: list[int] = []
    for i, char in enumerate(text):
        if i in dropped or is_invisible(char):
            continue
        piece = " " if split_words and char == "_" else _fold_char(char)
        if split_words and out and out[-1].islower() and piece[:1].isupper():
            piece = " " + piece
        for c in piece:
            if c.isspace():
                c = "\n" if i in items else " "
                if out and out[-1] in " \n":
                    out[-1] = "\n" if "\n" in (c, out[-1]) else " "
                    continue
            out.append(c)
            origin.append(i)
    return _View("".join(out), tuple(origin))


def _views(text: str) -> tuple[_View, list[_View], list[tuple[int, int, str]]]:
    """The plain view, every view to match phrases in, and the HTML comments (original span, content)."""
    plain = _fold(text)
    views = [plain]
    words = _fold(text, split_words=True)
    if words.text != plain.text:
        views.append(words)
    comments = []
    for match in _COMMENT.finditer(plain.text):
        start, end = plain.span(match.start(), match.end())
        comments.append((start, end, match.group(1)))
    if comments:
        views.append(_fold(text, cut=[(start, end) for start, end, _ in comments]))
    return plain, views, comments


def _phrases(text: str, views: list[_View]) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, rule, detail) for each phrase a rule finds in any view, spans in `text`."""
    for view in views:
        for rule, pattern in _RULES:
            for match in pattern.finditer(view.text):
                start, end = view.span(match.start(), match.end())
                detail = repr(text[start:end][:120])
                if match.group() != text[start:end]:
                    detail += f" (read as {match.group()[:120]!r})"
                yield start, end, rule, detail


# --- hidden and encoded text ------------------------------------------------------------------


def _hidden_chars(run: str) -> str:
    """What a run of invisibles spells: tag characters mirror ASCII at U+E0000 + code point; variation
    selectors are bytes (U+FE00-FE0F 0-15, U+E0100-E01EF 16-255), a known way to smuggle text."""
    tags = "".join(chr(ord(c) - 0xE0000) for c in run if 0xE0020 <= ord(c) <= 0xE007E)
    data = bytes(
        ord(c) - 0xFE00 if c <= "\ufe0f" else ord(c) - 0xE0100 + 16 for c in run if _is_variation_selector(c)
    )
    smuggled = "".join(c for c in data.decode("utf-8", "ignore") if c.isprintable() or c.isspace())
    return tags + (smuggled if len(smuggled) * 2 >= len(data) else "")


def _invisible(text: str) -> Iterator[tuple[int, int, str, str]]:
    """A finding per run of invisible characters, then the rules run over the text the runs spell."""
    hidden: list[str] = []
    hidden_at: list[tuple[int, int]] = []
    start = None
    for i, char in enumerate([*text, "a"]):  # the sentinel closes a run at the end
        if i < len(text) and is_invisible(char):
            start = i if start is None else start
            continue
        if start is None:
            continue
        run, end, start = text[start:i], i, None
        if _expected(text, end - len(run), end):
            continue
        spelled = _hidden_chars(run)
        codes = sorted({f"U+{ord(c):04X}" for c in run})
        detail = (
            f"{len(run)} invisible characters ({', '.join(codes[:4])}{', ...' if len(codes) > 4 else ''})"
        )
        if spelled:
            detail += f" spelling {spelled[:200]!r}"
            hidden.append(spelled)
            hidden_at.extend([(end - len(run), end)] * len(spelled))
        yield end - len(run), end, "invisible-unicode", detail
    if hidden:
        said = _fold("".join(hidden))
        for rule, pattern in _RULES:
            for match in pattern.finditer(said.text):
                first, last = said.span(match.start(), match.end())
                yield hidden_at[first][0], hidden_at[last - 1][1], rule, f"hidden text says {match.group()!r}"


def _decoded(payload: str) -> str | None:
    """The text a base64 run encodes, or None when it is not base64 of mostly printable UTF-8."""
    data = payload.rstrip("=").replace("-", "+").replace("_", "/")
    if len(data) > _MAX_BASE64 or len(data) % 4 == 1:
        return None
    try:
        text = base64.b64decode(data + "=" * (-len(data) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    readable = sum(c.isprintable() or c.isspace() for c in text)
    return text if text.strip() and readable >= 0.9 * len(text) else None


def _base64(plain: _View) -> Iterator[tuple[int, int, str]]:
    """(start, end in the plain view, decoded text) of each base64 run, lines of a wrapped one joined."""
    runs = list(_BASE64.finditer(plain.text))
    i = 0
    while i < len(runs):
        j = i
        while (
            j + 1 < len(runs)
            and runs[j + 1].start() == runs[j].end() + 1
            and len(runs[j].group()) >= 40
            and len(runs[j].group()) % 4 == 0
        ):
            j += 1
        joined = _decoded("".join(run.group() for run in runs[i : j + 1]))
        if joined is not None:
            yield runs[i].start(), runs[j].end(), joined
        else:
            for run in runs[i : j + 1]:
                decoded = _decoded(run.group())
                if decoded is not None:
                    yield run.start(), run.end(), decoded
        i = j + 1


# --- scanning ---------------------------------------------------------------------------------


def _scan(text: str, depth: int) -> Iterator[tuple[int, int, str, str]]:
    yield from _invisible(text)
    plain, views, comments = _views(text)
    yield from _phrases(text, views)
    for start, end, content in comments:
        said = _fold(content).text
        if _DIRECTIVE.search(said) or any(pattern.search(said) for _, pattern in _RULES):
            yield start, end, "hidden-comment", f"HTML comment (hidden when rendered): {said.strip()[:120]!r}"
    if depth < _MAX_DEPTH:
        for first, last, decoded in _base64(plain):
            start, end = plain.span(first, last)
            for _, _, rule, detail in _scan(decoded, depth + 1):
                yield start, end, rule, f"base64 of {decoded[:80]!r}: {detail}"


def scan_text(text: str, *, max_length: int = DEFAULT_MAX_DESCRIPTION) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, rule, detail) for each suspicious span of one string, spans in `text` as given."""
    seen: set[tuple[int, int, str]] = set()
    for start, end, rule, detail in _scan(text, 0):
        if (start, end, rule) not in seen:
            seen.add((start, end, rule))
            yield start, end, rule, detail
    if len(text) > max_length:
        yield max_length, len(text), "length", f"{len(text)} characters (more than {max_length})"


_NOT_TEXT = frozenset({"uri", "uriTemplate", "icons"})
"""Item fields that are addresses or images, not words for the model: a resource may well be `.env`."""


def _strings(item: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, text) of every string in an item, keys below its top level included."""
    if isinstance(item, Mapping):
        for key, value in item.items():
            if key == "_meta" or (not path and key in _NOT_TEXT):
                continue
            where = f"{path}.{key}" if path else str(key)
            if path:
                yield where + KEY_SUFFIX, str(key)
            if isinstance(value, str):
                yield where, value
            else:
                yield from _strings(value, where)
    elif isinstance(item, list):
        for i, value in enumerate(item):
            if isinstance(value, str):
                yield f"{path}[{i}]", value
            else:
                yield from _strings(value, f"{path}[{i}]")


def scan_item(
    server: str, kind: str, name: str, item: Mapping[str, Any], *, max_length: int = DEFAULT_MAX_DESCRIPTION
) -> list[Finding]:
    return [
        Finding(server, kind, name, where, start, end, rule, detail)
        for where, text in _strings(item, "")
        for start, end, rule, detail in scan_text(text, max_length=max_length)
    ]


KINDS: dict[str, tuple[str, str]] = {
    "tools": ("tool", "name"),
    "prompts": ("prompt", "name"),
    "resources": ("resource", "uri"),
    "resource_templates": ("resource_template", "uriTemplate"),
}
"""List name -> (kind in findings, key that names an item)."""


def scan_lists(
    server: str, lists: Mapping[str, list[dict[str, Any]]], *, max_length: int = DEFAULT_MAX_DESCRIPTION
) -> list[Finding]:
    """Every finding in one upstream's lists (as `Upstream.lists` holds them)."""
    findings: list[Finding] = []
    for list_name, (kind, key) in KINDS.items():
        for item in lists.get(list_name, []):
            findings.extend(scan_item(server, kind, str(item.get(key, "")), item, max_length=max_length))
    return findings
