"""Redaction of secrets before anything is stored: by key name and by value shape.

Owns: the rules that keep credentials out of the audit log. Keys that name a
secret (password, token, authorization, api_key, ...) have their values
replaced; values that look like a credential (bearer tokens, cloud and GitHub
and Slack keys, JWTs, private keys, passwords in URLs) are replaced wherever
they appear. The marker names the rule, so a reader knows what was there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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

_VALUE_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "private-key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
    ),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    ("aws-key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("url-password", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")),
]


class Redactor:
    def __init__(self, *, extra_keys: Iterable[str] = (), extra_patterns: Iterable[str] = ()) -> None:
        self._keys = tuple(k.lower() for k in (*DEFAULT_SECRET_KEYS, *extra_keys))
        self._rules = [*_VALUE_RULES, *(("custom", re.compile(p)) for p in extra_patterns)]

    def secret_key(self, key: str) -> bool:
        lowered = key.lower()
        return any(k in lowered for k in self._keys)

    def text(self, value: str, literals: Iterable[str] = ()) -> str:
        """Secret-looking spans replaced, and any of `literals` (known secret values) wherever they appear."""
        for literal in literals:
            value = value.replace(literal, "[REDACTED:key]")
        for name, pattern in self._rules:
            value = pattern.sub(f"[REDACTED:{name}]", value)
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
