"""Redaction of secrets before anything is stored: by key name and by value shape.

Owns: the rules that keep credentials out of the audit log. Keys that name a
secret (password, token, authorization, api_key, ...) have their values
replaced; values that look like a credential (bearer tokens, cloud and GitHub
and Slack keys, JWTs, private keys, passwords in URLs) are replaced wherever
they appear, and so are the values of secret-named URL parameters (`?token=...`,
`&api_key=...`, `#access_token=...`). The marker names the rule, so a reader knows
what was there.
The detectors themselves live in `dataguard` (one set for the audit log and the
data rules); payment card numbers are always redacted here too, and so is
whatever a data rule of the registry looks for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mcpgw.detectors import AUDIT_ALWAYS, Detector

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


class Redactor:
    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        extra_patterns: Iterable[str] = (),
        detectors: Iterable[Detector] = (),
    ) -> None:
        self._keys = tuple(k.lower() for k in (*DEFAULT_SECRET_KEYS, *extra_keys))
        extra = [d for d in detectors if d not in AUDIT_ALWAYS]
        custom = [Detector("custom", re.compile(p)) for p in extra_patterns]
        self._rules: list[Detector] = [*AUDIT_ALWAYS, *extra, *custom]
        names = "|".join(re.escape(k) for k in (*self._keys, *QUERY_SECRET_KEYS))
        # `?`, `&`, `;` or `#`, a parameter name containing a secret key, `=`, and the value up to
        # the next separator: the value goes, the name stays so a reader sees what it was.
        self._query = re.compile(rf"(?i)([?&;#][^=&#\s?]*(?:{names})[^=&#\s?]*=)[^&#\s]+")

    def secret_key(self, key: str) -> bool:
        lowered = key.lower()
        return any(k in lowered for k in self._keys)

    def text(self, value: str, literals: Iterable[str] = ()) -> str:
        """Secret-looking spans replaced, and any of `literals` (known secret values) wherever they appear."""
        for literal in literals:
            value = value.replace(literal, "[REDACTED:key]")
        for detector in self._rules:
            value = detector.sub(value)[0]
        if "=" in value:
            value = self._query.sub(rf"\1{QUERY_MARKER}", value)
        return value

    def secret_values(self, value: Any) -> list[str]:
        """The string values held under secret keys: an upstream may echo them back in an error."""
        found: list[str] = []
        if isinstance(value, dict):
            for k, v in value.items():
                if self.secret_key(str(k)) and isinstance(v, str | int | float) and len(str(v)) >= 4:
                    found.append(str(v))
                else:
                    found.extend(self.secret_values(v))
        elif isinstance(value, list):
            for v in value:
                found.extend(self.secret_values(v))
        return found

    def value(self, value: Any) -> Any:
        """A JSON-like value with secret keys and secret-looking strings replaced."""
        if isinstance(value, dict):
            return {
                k: "[REDACTED:key]" if self.secret_key(str(k)) and v not in (None, "") else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value
