"""The built-in sensitive-data detectors: named, compiled patterns and nothing else.

Owns: cloud keys, GitHub and Slack tokens, private keys, JWTs, bearer tokens,
passwords in URLs, payment card numbers with a Luhn check, e-mail addresses,
and building the registry's custom regexes into detectors. It sits at the bottom
(no mcpgw imports) because the registry validates detector names at load, the
audit log redacts with them, and `security.dataguard` applies them per rule.

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
    is faster.
    """

    name: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    prefilter: tuple[str, ...] = ()
    finder: Callable[[str], Iterator[tuple[int, int]]] | None = None
    caseless: bool = False

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
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
    ),
    Detector(
        "jwt",
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        _jwt_header,
        prefilter=("eyJ",),
    ),
    Detector(
        "bearer",
        re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]{8,}"),
        prefilter=("bearer",),
        caseless=True,  # the HTTP scheme name is case-insensitive: `BeArEr` is a bearer token too
    ),
    Detector("aws-key", re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}"), prefilter=("AKIA", "ASIA")),
    Detector(
        "github-token",
        re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"),
        prefilter=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Detector("slack-token", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"), prefilter=("xox",)),
    Detector(
        "url-password",
        re.compile(r"://([^/\s:@]+:[^/\s@]+)@"),
        _not_a_marker,
        prefilter=("://",),
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
CARD = Detector("card", _CARD, luhn)
EMAIL = Detector("email", _EMAIL_DOMAIN, prefilter=("@",), finder=_emails)
BUILTIN: dict[str, Detector] = {d.name: d for d in (*SECRET_DETECTORS, CARD, EMAIL)}
"""Every built-in detector by name; `[security.detectors]` adds custom ones."""

AUDIT_ALWAYS: tuple[Detector, ...] = (*SECRET_DETECTORS, CARD)
"""What the audit log never stores, whatever the rules say."""


def custom_detectors(patterns: Mapping[str, str]) -> dict[str, Detector]:
    return {name: Detector(name, re.compile(pattern)) for name, pattern in patterns.items()}
