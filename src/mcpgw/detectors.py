"""The built-in sensitive-data detectors, and the forms of a JSON value they read text in.

Owns: cloud keys, GitHub and Slack tokens, private keys, JWTs, bearer tokens,
passwords in URLs, payment card numbers with a Luhn check, e-mail addresses,
and building the registry's custom regexes into detectors; and the two other
forms a JSON value carries text in, which both users of the detectors read:
base64 of UTF-8 text (`Base64Text`, decoded, and re-encoded the same way after
a redaction) and numbers (`number_text`). It sits at the bottom (no mcpgw
imports) because the registry validates detector names at load, the audit log
redacts with them, and `security.dataguard` applies them per rule.

The patterns have no word-boundary anchor on the left: a key glued to word
characters (`x_AKIA...`, `tokenxoxb-...`) is still found. Each secret starts with
a literal distinctive enough that this finds nothing new in ordinary text (the
one exception: `bearer` now also matches at the end of `standard-bearer`, and,
as before, when a long word follows it). The card pattern keeps out longer digit
runs and chains of digit groups with look-arounds, not with word boundaries.

Why our own detectors and not a library: detect-secrets (the maintained
candidate) scans files line by line through a global plugin registry, returns
the matched strings without positions, pulls in requests and PyYAML, and has no
card or e-mail detector; what is needed here is a few compiled patterns that
replace spans inside JSON values on the call path.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass


def marker(name: str) -> str:
    return f"[REDACTED:{name}]"


@dataclass(frozen=True)
class Detector:
    """A named pattern, with an optional check a match must also pass (a checksum, a decode).

    `prefilter`: literals one of which any match contains; a text with none of them is skipped
    without running the pattern (on 1 MB that is ~0.1 ms instead of ~30 ms); with `caseless`
    they are lower case and looked for in the lower-cased text (~0.3 ms on 1 MB). A pattern
    with a group reports the group's span. `finder` replaces the pattern's own search when one
    is faster. `min_length`: no match is shorter. `digits`: whether a match can be all digits,
    so that JSON numbers are checked with this detector (custom detectors: always), and
    `number_check` what a number's digits must also pass to count (see `in_number`).
    `screen`: for a detector without a prefilter, a pattern that finds something in every text
    this detector finds something in (the card's runs of digits), so a caller can skip it.
    """

    name: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    prefilter: tuple[str, ...] = ()
    finder: Callable[[str], Iterator[tuple[int, int]]] | None = None
    caseless: bool = False
    min_length: int = 0
    digits: bool = True
    number_check: Callable[[str], bool] | None = None
    screen: re.Pattern[str] | None = None

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        if len(text) < self.min_length:
            return
        if self.prefilter:
            haystack = text.lower() if self.caseless else text
            if not any(literal in haystack for literal in self.prefilter):
                return
        if self.finder is not None:
            found: Iterable[tuple[int, int]] = self.finder(text)
        elif self.pattern.groups:
            found = (match.span(1) for match in self.pattern.finditer(text))
        else:
            found = (match.span() for match in self.pattern.finditer(text))
        for start, end in found:
            if self.check is None or self.check(text[start:end]):
                yield start, end

    def in_number(self, digits: str) -> bool:
        """Whether this detector finds anything in the digits of a JSON number (`number_text`):
        a number is one token, so a match anywhere in it is the whole number's."""
        if not self.digits or (self.number_check is not None and not self.number_check(digits)):
            return False
        return next(self.spans(digits), None) is not None

    def sub(self, text: str) -> tuple[str, int]:
        """`text` with every match replaced by this detector's marker, and how many there were."""
        pieces: list[str] = []
        last = 0
        for start, end in self.spans(text):
            pieces.append(text[last:start])
            pieces.append(marker(self.name))
            last = end
        if not pieces:
            return text, 0
        pieces.append(text[last:])
        return "".join(pieces), len(pieces) // 2


def luhn(candidate: str) -> bool:
    """The payment-card checksum over the digits of `candidate` (13 to 19 of them)."""
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _jwt_header(candidate: str) -> bool:
    """A JWT's first segment decodes to a JSON object naming its algorithm."""
    head = candidate.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


MARKER = re.compile(r"\[REDACTED:([a-z0-9-]+)\]")
"""What `marker` writes; the group is the detector's name."""


def _not_a_marker(candidate: str) -> bool:
    """`https://[REDACTED:url-password]@host` has the shape of a password in a URL: not again."""
    return MARKER.fullmatch(candidate) is None


# Secrets have a fixed prefix: nothing on their left is looked at, so `x_AKIA...` is found. A
# right-hand anchor would let a glued suffix hide a key (`AKIA...EXAMPLEX`): there is none either.
SECRET_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private-key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        prefilter=("PRIVATE KEY",),
        digits=False,
    ),
    Detector(
        "jwt",
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        _jwt_header,
        prefilter=("eyJ",),
        digits=False,
    ),
    Detector(
        "bearer",
        re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]{8,}"),
        prefilter=("bearer",),
        caseless=True,  # the HTTP scheme name is case-insensitive: `BeArEr` is a bearer token too
        digits=False,
    ),
    Detector("aws-key", re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}"), prefilter=("AKIA", "ASIA"), digits=False),
    Detector(
        "github-token",
        re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"),
        prefilter=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        digits=False,
    ),
    Detector("slack-token", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"), prefilter=("xox",), digits=False),
    Detector(
        "url-password",
        re.compile(r"://([^/\s:@]+:[^/\s@]+)@"),
        _not_a_marker,
        prefilter=("://",),
        digits=False,
    ),
)
"""Credentials: always redacted in the audit log."""

# The top-level domain ends where letters and digits do: `ann@example.com_x` is an address glued
# to `_x`.
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9])")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def _emails(text: str) -> Iterator[tuple[int, int]]:
    """Find each `@domain.tld`, then extend left over the local part: far faster than a pattern
    that starts its attempt at every word of a long text."""
    for match in _EMAIL_DOMAIN.finditer(text):
        start = match.start()
        while start > 0 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if start < match.start():
            yield start, match.end()


# The card pattern starts with a character class (not a look-behind) so the regex engine can skip
# ahead to the next digit: about 6 ms instead of 45 ms on 1 MB of prose. The look-arounds keep out a
# longer digit run and a chain of digit groups (`1-800-...`, dates), not a word or a hyphen glued on
# (`ref-4111...`, `x_4111...` are cards).
_CARD = re.compile(r"[0-9](?<![0-9][0-9])(?<![0-9]-[0-9])(?:[ -]?[0-9]){12,18}(?![0-9])(?!-[0-9])")
_CARD_RUN = re.compile(r"[0-9][0-9 -]{11,}")


def _cards(text: str) -> Iterator[tuple[int, int]]:
    """`_CARD`'s matches, looked for only in runs of digits, spaces and hyphens long enough to hold
    one. A card lies within one such run, and the run ends at a character the look-aheads accept,
    so the matches are the same; but in base64 (a digit in every six characters) the simple run
    pattern costs ~15 ms per MB where `_CARD` tried at every digit costs ~40 ms."""
    for run in _CARD_RUN.finditer(text):
        for match in _CARD.finditer(text, run.start(), run.end()):
            yield match.span()


def _card_network(digits: str) -> bool:
    """A number that starts as the card networks' do (ISO/IEC 7812: 2 to 6; only Visa, 4, issued
    13 digits). JSON numbers are often millisecond timestamps (13 digits starting with 1) and
    snowflake IDs (17 to 19 digits starting with 1), one in ten of which passes the checksum."""
    return digits[0] in "23456" and (len(digits) > 13 or digits[0] == "4")


CARD = Detector(
    "card", _CARD, luhn, finder=_cards, min_length=13, number_check=_card_network, screen=_CARD_RUN
)
EMAIL = Detector("email", _EMAIL_DOMAIN, prefilter=("@",), finder=_emails, digits=False)
BUILTIN: dict[str, Detector] = {d.name: d for d in (*SECRET_DETECTORS, CARD, EMAIL)}
"""Every built-in detector by name; `[security.detectors]` adds custom ones."""

AUDIT_ALWAYS: tuple[Detector, ...] = (*SECRET_DETECTORS, CARD)
"""What the audit log never stores, whatever the rules say."""


def custom_detectors(patterns: Mapping[str, str]) -> dict[str, Detector]:
    return {name: Detector(name, re.compile(pattern)) for name, pattern in patterns.items()}


# --- the other forms text takes in a JSON value ---------------------------------------------------


def number_text(value: object) -> str | None:
    """The digits a detector reads in a JSON number: an int, or a float whose value is an integer
    (`4111111111111111.0`), without its sign; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    try:
        return str(abs(int(value)))
    except ValueError:  # more digits than Python prints (sys.set_int_max_str_digits): no card or key
        return None


_BASE64_MIN = 8
"""Shorter values are not decoded: they hold at most 5 bytes, less than any built-in detector finds."""
_BASE64_SHAPE = re.compile(r"[A-Za-z0-9+/_\r\n-]+={0,2}(?:\r?\n)?")


@dataclass(frozen=True)
class Base64Text:
    """A value that is base64 of UTF-8 text (standard or URL-safe alphabet, padded or not, on one
    line or wrapped at a fixed width, alone or as a `data:...;base64,` URI), decoded.

    Binary payloads (images, audio, archives) are not UTF-8: that shows in their first bytes, so
    they cost one pass of a regex and the decoding of 3 kB, and are never read as text.
    """

    value: str
    text: str
    urlsafe: bool
    padded: bool
    width: int
    newline: str
    trailing: bool
    prefix: str = ""

    @classmethod
    def decode(cls, value: str) -> Base64Text | None:
        prefix = ""
        if value.startswith("data:"):
            comma = value.find(",", 0, 256)
            if comma > 0 and value[:comma].endswith(";base64"):
                prefix = value[: comma + 1]
        data = value[len(prefix) :]
        if len(data) < _BASE64_MIN or _BASE64_SHAPE.fullmatch(data) is None:
            return None
        urlsafe = "-" in data or "_" in data
        if urlsafe and ("+" in data or "/" in data):
            return None
        newline, width, trailing, compact = "\n", 0, False, data
        if "\n" in data or "\r" in data:
            newline = "\r\n" if "\r\n" in data else "\n"
            trailing = data.endswith(newline)
            lines = (data[: -len(newline)] if trailing else data).split(newline)
            width = len(lines[0]) if len(lines) > 1 else 0
            compact = data.replace("\r", "").replace("\n", "")
        body = compact.rstrip("=")
        if not body or len(body) % 4 == 1:
            return None
        altchars = b"-_" if urlsafe else None
        try:
            if len(body) > 4096:  # binary shows in its first bytes (PNG, JPEG, WAV): stop there
                codecs.getincrementaldecoder("utf-8")().decode(base64.b64decode(body[:4096], altchars))
            # The shape is checked above: the decoder's own check would be a second pass.
            text = base64.b64decode(body + "=" * (-len(body) % 4), altchars).decode("utf-8")
        except (binascii.Error, ValueError):  # binary (not UTF-8), or not decodable after all
            return None
        # Without `=`, a length that is a multiple of four says nothing about padding: standard base64
        # (MCP's) pads, URL-safe base64 (as in JWTs) mostly does not.
        padded = compact.endswith("=") or (len(compact) % 4 == 0 and not urlsafe)
        return cls(value, text, urlsafe, padded, width, newline, trailing, prefix)

    def encode(self, text: str) -> str:
        """`text` in base64 written the way this value was."""
        out = base64.b64encode(text.encode(), altchars=b"-_" if self.urlsafe else None).decode("ascii")
        if not self.padded:
            out = out.rstrip("=")
        if self.width:
            out = self.newline.join(out[i : i + self.width] for i in range(0, len(out), self.width))
        return self.prefix + (out + self.newline if self.trailing else out)

    def reencode(self, text: str) -> str | None:
        """`text` (this value's text after a redaction) encoded as this value was; None when
        encoding this value's own text does not give the value back (non-zero padding bits,
        uneven line lengths, mixed newlines): it cannot be rewritten faithfully."""
        return self.encode(text) if self.encode(self.text) == self.value else None


def free_key(key: str, *taken: Mapping[str, object]) -> str:
    """`key` (an object key after a redaction), or `key (2)`, `key (3)`, ... when a mapping in
    `taken` has it: a renamed key must not replace another entry."""
    candidate, n = key, 1
    while any(candidate in mapping for mapping in taken):
        n += 1
        candidate = f"{key} ({n})"
    return candidate
