"""Per-persona daily sampling budgets: `tokens_per_day` and `usd_per_day`, in UTC days.

Owns each persona's running spend for today (seeded once a day from the audit
log, so budgets survive a restart), charging a model's answer to it, and
refusing a request before anything is sent once the day's budget is used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mcpgw.audit import spend
from mcpgw.config import DEFAULT_PERSONA, SamplingScope, SamplingSettings
from mcpgw.errors import SamplingRefused


def _usd(amount: float) -> str:
    """Dollars as people read them: cents for real budgets, micro-dollars for tiny ones."""
    return f"{amount:.2f}" if amount >= 0.01 else f"{amount:.6f}"


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


class Budgets:
    """What each persona spent on sampling today, and whether it may spend more."""

    def __init__(self, settings: SamplingSettings, *, audit_path: Path | None = None) -> None:
        self.settings = settings
        self.audit_path = audit_path
        """The audit database spend is read back from (None: no log, every day starts at 0)."""
        self._spent: dict[tuple[str, str], list[float]] = {}
        """(persona, UTC day) -> [tokens, usd]; seeded from the audit log at first use."""

    def _budget(self, persona: str | None) -> SamplingScope | None:
        scope = self.settings.personas.get(persona or DEFAULT_PERSONA)
        if scope is None or (scope.tokens_per_day is None and scope.usd_per_day is None):
            return None
        return scope

    def spent(self, persona: str | None) -> tuple[int, float]:
        tokens, usd = self._spent_today(persona)
        return int(tokens), usd

    def charge(self, persona: str | None, *, tokens: int, usd: float) -> None:
        """Add a model's answer to `persona`'s spend today."""
        spent = self._spent_today(persona)
        spent[0] += tokens
        spent[1] += usd

    def _spent_today(self, persona: str | None) -> list[float]:
        """The running [tokens, usd] of `persona` today, seeded once per day from the audit log."""
        key = (persona or DEFAULT_PERSONA, _today())
        if key not in self._spent:
            path = self.audit_path
            seed = spend.spent_by(path, key[0], since=key[1]) if path is not None else (0.0, 0.0)
            self._spent[key] = list(seed)
        return self._spent[key]

    def check(self, persona: str | None) -> None:
        """Refuse (`SamplingRefused`) once `persona` has used today's tokens or dollars."""
        scope = self._budget(persona)
        if scope is None:
            return
        tokens, usd = self.spent(persona)
        name = persona or DEFAULT_PERSONA
        if scope.tokens_per_day is not None and tokens >= scope.tokens_per_day:
            raise SamplingRefused(
                f"persona {name!r} has used its sampling budget for today "
                f"({tokens} of {scope.tokens_per_day} tokens); it renews at 00:00 UTC"
            )
        if scope.usd_per_day is not None and usd >= scope.usd_per_day:
            raise SamplingRefused(
                f"persona {name!r} has used its sampling budget for today "
                f"(${_usd(usd)} of ${_usd(scope.usd_per_day)}); it renews at 00:00 UTC"
            )
