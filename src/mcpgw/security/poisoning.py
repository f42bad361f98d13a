"""Tool poisoning checks: signs of instructions aimed at the model in what an upstream describes.

Owns: scanning the descriptions (and titles) of tools, prompts, resources and
resource templates, and the `description`/`title` strings inside their schemas,
for hidden or invisible Unicode (the tags block U+E0000-E007F, zero-width
characters, bidi controls), "ignore previous instructions"-style text,
instructions to read sensitive files or send data elsewhere, and excessive
length. Each `Finding` names the server, the item, the field and the offending
span (character offsets into that field), and never needs the network.

The checks run on `add-server`, on `pin`, and on every catalog rebuild (see
`trust.Trust`); what happens to a flagged item is decided there, by mode.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_DESCRIPTION = 2000

_INVISIBLE = re.compile(
    "[\U000e0000-\U000e007f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u180e\u061c\u00ad]+"
)
"""Tag characters, zero-width characters and joiners, bidi marks, embeddings, overrides and isolates."""

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

TEXT_KEYS = ("description", "title")


@dataclass(frozen=True)
class Finding:
    server: str
    kind: str
    """tool, prompt, resource or resource_template."""
    name: str
    """The item's name as the upstream knows it (a URI for resources)."""
    field: str
    """Where in the item: `description`, or a path like `inputSchema.properties.path.description`."""
    start: int
    end: int
    rule: str
    """invisible-unicode, override, file-access, exfiltration or length."""
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.server}: {self.kind} {self.name!r}: {self.field} "
            f"[{self.start}:{self.end}]: {self.rule}: {self.detail}"
        )


def shown(text: str) -> str:
    """`text` with each invisible character written as `\\u{XXXX}`, for people to read (diffs, lock file)."""
    return _INVISIBLE.sub(lambda m: "".join(f"\\u{{{ord(c):04x}}}" for c in m.group()), text)


def json_escaped(text: str) -> str:
    """JSON text with invisible characters as JSON escapes: same value when parsed, visible when read."""

    def escape(match: re.Match[str]) -> str:
        out = []
        for c in match.group():
            code = ord(c)
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        return "".join(out)

    return _INVISIBLE.sub(escape, text)


def _hidden_text(run: str) -> str:
    """What a run of tag characters spells (they mirror ASCII at U+E0000 + code point)."""
    return "".join(chr(ord(c) - 0xE0000) for c in run if 0xE0020 <= ord(c) <= 0xE007E)


def scan_text(text: str, *, max_length: int = DEFAULT_MAX_DESCRIPTION) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, rule, detail) for each suspicious span of one string."""
    for match in _INVISIBLE.finditer(text):
        run = match.group()
        hidden = _hidden_text(run)
        codes = ", ".join(sorted({f"U+{ord(c):04X}" for c in run})[:4])
        detail = f"{len(run)} invisible characters ({codes}{', ...' if len(set(run)) > 4 else ''})"
        if hidden:
            detail += f" spelling {hidden[:200]!r}"
        yield match.start(), match.end(), "invisible-unicode", detail
        for rule, pattern in _RULES:
            inner = pattern.search(hidden)
            if inner is not None:
                yield match.start(), match.end(), rule, f"hidden text says {inner.group()!r}"
    for rule, pattern in _RULES:
        for match in pattern.finditer(text):
            yield match.start(), match.end(), rule, repr(match.group()[:120])
    if len(text) > max_length:
        yield max_length, len(text), "length", f"{len(text)} characters (more than {max_length})"


def _strings(item: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, text) of every description or title in an item and its nested schemas."""
    if isinstance(item, Mapping):
        for key, value in item.items():
            where = f"{path}.{key}" if path else str(key)
            if key in TEXT_KEYS and isinstance(value, str):
                yield where, value
            elif key != "_meta":
                yield from _strings(value, where)
    elif isinstance(item, list):
        for i, value in enumerate(item):
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
