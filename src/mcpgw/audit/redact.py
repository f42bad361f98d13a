"""Redaction of secrets before anything is stored: by key name and by value shape.

Owns: the rules that keep credentials out of the audit log. Keys that name a
secret (password, token, authorization, api_key, ...) have their values
replaced; values that look like a credential (bearer tokens, cloud and GitHub
and Slack keys, JWTs, private keys, passwords in URLs) are replaced wherever
they appear, and so are the values of secret-named URL parameters (`?token=...`,
`&api_key=...`, `#access_token=...`). The marker names the rule, so a reader knows
what was there. The detectors themselves live in `mcpgw.detectors` (one set for
the audit log and the data rules); payment card numbers are always redacted here
too, and so is whatever a data rule of the registry looks for.

Like the data rules, the redactor reads every part of a value: object keys
(renamed to the marker), numbers (a card number becomes the marker string) and
the text inside base64 (re-encoded with the marker inside; replaced by the
marker when it cannot be re-encoded as it was). Because results and errors
reach the log as text (a result as its JSON dump), `text` also looks for base64
inside the text: each run of 16 or more base64 characters that decodes to UTF-8
text is read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mcpgw.detectors import (
    AUDIT_ALWAYS,
    MARKER,
    SECRET_DETECTORS,
    Base64Text,
    Detector,
    free_key,
    marker,
    number_text,
)

_IN, _OUT = r"[A-Za-z0-9+/_\\-]", r"[^A-Za-z0-9+/_\\-]"
_BASE64_RUN = re.compile(rf"{_IN}{{16,}}={{0,2}}")
"""Base64 inside a text, such as a JSON dump's `"data":"..."`, where a line break is written as a
backslash and `n` (the class takes the backslash: an alternation would cost five times more).
16 characters hold 12 bytes."""
_NO_BASE64_RUN = re.compile(rf"{_OUT}*+(?:{_IN}{{1,15}}+{_OUT}++)*+{_IN}{{0,15}}+")
"""Matches a whole text exactly when `_BASE64_RUN` finds nothing in it: runs of at most 15, taken
possessively, so it never tries again inside a run (~0.8 us on 200 characters where a search
that finds nothing takes ~1.8)."""

DEFAULT_SECRET_KEYS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "auth",
    "cookie",
    "credential",
    "private_key",
    "access_key",
    "client_secret",
    "session",
)
QUERY_SECRET_KEYS = ("key", "sig", "signature", "code", "pwd")
"""Besides the secret keys: URL parameters that carry credentials by custom (`?key=` API keys,
signed-URL signatures, OAuth authorization codes)."""
QUERY_MARKER = "[REDACTED:url-parameter]"
_KNOWN_KEYS = 4096
_KNOWN_KEY_CHARS = 200


class Redactor:
    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        extra_patterns: Iterable[str] = (),
        detectors: Iterable[Detector] = (),
        always: tuple[Detector, ...] = AUDIT_ALWAYS,
    ) -> None:
        self._extra_keys, self._patterns = tuple(extra_keys), tuple(extra_patterns)
        self._keys = tuple(k.lower() for k in (*DEFAULT_SECRET_KEYS, *extra_keys))
        extra = [d for d in detectors if d not in always]
        custom = [Detector("custom", re.compile(p)) for p in self._patterns]
        self._rules: list[Detector] = [*always, *extra, *custom]
        # Why a screen: most texts (a call's arguments, a plain result) hold none of the literals a
        # secret starts with and no run of digits. One pass of `in` tests over the text says so for
        # every detector that has a prefilter or a screen at once, where running each detector
        # (its generator, its own prefilter test) cost ~10 us per 200 characters.
        self._plan = tuple((d, bool(d.prefilter) or d.screen is not None) for d in self._rules)
        self._literals = tuple(lit for d in self._rules if not d.caseless for lit in d.prefilter)
        self._lowered = tuple(lit for d in self._rules if d.caseless for lit in d.prefilter)
        self._screens = tuple(d.screen for d in self._rules if not d.prefilter and d.screen is not None)
        names = "|".join(re.escape(k) for k in (*self._keys, *QUERY_SECRET_KEYS))
        # `?`, `&`, `;` or `#`, a parameter name containing a secret key, `=`, and the value up to
        # the next separator: the value goes, the name stays so a reader sees what it was.
        self._query = re.compile(rf"(?i)([?&;#][^=&#\s?]*(?:{names})[^=&#\s?]*=)[^&#\s]+")
        self._known_keys: dict[str, tuple[bool, str]] = {}
        """Object keys read before: whether each names a secret, and the key as stored (see `_key`)."""

    def for_ids(self) -> Redactor:
        """This redactor for the ids rows are looked up by (`logs --session`, `--principal`): credentials
        and `redact_patterns` only, not card numbers or the data rules. Why: session ids are mostly
        random hex (the SDK's MCP session ids, a client's uuid), and about one in 450 holds a run of
        13 digits or more that passes the card checksum; stored redacted, its rows were under an id
        nobody had, and `logs --session` found none of them."""
        return Redactor(extra_keys=self._extra_keys, extra_patterns=self._patterns, always=SECRET_DETECTORS)

    def secret_key(self, key: str) -> bool:
        lowered = key.lower()
        return any(k in lowered for k in self._keys)

    def _key(self, key: str) -> tuple[bool, str]:
        """Whether `key` names a secret, and `key` redacted: kept for short keys, since arguments
        use the same few keys call after call (the redactor has no state: the answer is fixed)."""
        known = self._known_keys.get(key)
        if known is None:
            known = (self.secret_key(key), self._string(key))
            if len(key) <= _KNOWN_KEY_CHARS:
                if len(self._known_keys) >= _KNOWN_KEYS:
                    self._known_keys.clear()
                self._known_keys[key] = known
        return known

    def text(self, value: str, literals: Iterable[str] = ()) -> str:
        """Secret-looking spans replaced, also inside base64 runs, and any of `literals` (known
        secret values) wherever they appear."""
        for literal in literals:
            value = value.replace(literal, "[REDACTED:key]")
        value = self._spans(value)
        if _NO_BASE64_RUN.fullmatch(value) is not None:  # most texts: no base64 to read
            return value
        return _BASE64_RUN.sub(self._run, value)

    def _spans(self, value: str) -> str:
        clean = self._clean(value)
        for detector, screened in self._plan:
            if clean and screened:  # it would find nothing: its prefilter or screen does not either
                continue
            value, found = detector.sub(value)
            if found:  # a detector without a screen changed the text: the rest read the new one
                clean = False
        if "=" in value:
            value = self._query.sub(rf"\1{QUERY_MARKER}", value)
        return value

    def _clean(self, value: str) -> bool:
        """Whether no detector with a prefilter or a screen can find anything in `value`."""
        for literal in self._literals:
            if literal in value:
                return False
        if self._lowered:
            lowered = value.lower()
            for literal in self._lowered:
                if literal in lowered:
                    return False
        return all(screen.search(value) is None for screen in self._screens)

    def _string(self, value: str) -> str:
        """A whole string value, and its text if it is base64 of text, as the data rules read it."""
        inner = Base64Text.decode(value)
        return self._spans(value if inner is None else self._inside(inner) or value)

    def _run(self, match: re.Match[str]) -> str:
        run = match.group()
        escaped = "\\" in run
        if escaped:
            run = run.replace("\\r", "\r").replace("\\n", "\n")
        # A result is cut before it is redacted: a run at the cut may end one character into a
        # group of four, which no decoder takes; the rest is read.
        cut = len(run.replace("\r", "").replace("\n", "")) % 4 == 1 and not run.endswith("=")
        head = run[:-1] if cut else run
        out = (self._inside(Base64Text.decode(head)) or head) + run[len(head) :]
        return out.replace("\r", "\\r").replace("\n", "\\n") if escaped else out

    def _inside(self, inner: Base64Text | None) -> str | None:
        """`inner` re-encoded after redacting its text, or None when nothing in it was redacted."""
        if inner is None:
            return None
        checked = self._string(inner.text)
        if checked == inner.text:
            return None
        encoded = inner.reencode(checked)
        if encoded is not None:
            return encoded
        names = dict.fromkeys(MARKER.findall(checked))
        return "".join(marker(name) for name in names) or marker("base64")

    def secret_values(self, value: Any) -> list[str]:
        """The string values held under secret keys: an upstream may echo them back in an error."""
        found: list[str] = []
        if isinstance(value, dict):
            for k, v in value.items():
                if self._key(str(k))[0] and isinstance(v, str | int | float) and len(str(v)) >= 4:
                    found.append(str(v))
                else:
                    found.extend(self.secret_values(v))
        elif isinstance(value, list):
            for v in value:
                found.extend(self.secret_values(v))
        return found

    def value(self, value: Any) -> Any:
        """A JSON-like value with secret keys' values, secret-looking strings, keys and numbers
        replaced."""
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                secret, shown = self._key(str(k))
                new = "[REDACTED:key]" if secret and v not in (None, "") else self.value(v)
                key = shown if isinstance(k, str) else k
                out[key if key == k else free_key(key, value, out)] = new
            return out
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self._string(value)
        digits = number_text(value)
        if digits is not None:
            for detector in self._rules:
                if detector.in_number(digits):
                    return marker(detector.name)
        return value
