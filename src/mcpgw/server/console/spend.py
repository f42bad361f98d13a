"""The Spend page: sampling tokens and cost per persona and per route, day by day, against budgets.

Owns: the daily sums of `sampling` rows over the last `DAYS` UTC days (the days budgets count
in, see `sampling.budget`), a table per persona of today's spend against its
`[sampling.personas.NAME]` budgets, and a chart per persona (cost and tokens, with the daily
budget drawn) and per route. The sums are SQL over the audit log's spend columns, on either store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mcpgw.audit.store import connection
from mcpgw.server.console.access import Visitor
from mcpgw.server.console.charts import bars
from mcpgw.server.console.context import Console
from mcpgw.server.console.layout import esc, render, table

DAYS = 14


def _days() -> list[str]:
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(DAYS - 1, -1, -1)]


def _sums(db: Any, since: str) -> list[dict[str, Any]]:
    """(day, persona, route) -> requests, tokens, dollars: sampling rows since `since` (a UTC day)."""
    # Grouped by the expressions, not their aliases: PostgreSQL would read `persona` as the column.
    day, persona, route = "substr(ts, 1, 10)", "coalesce(persona, '-')", "coalesce(name, '-')"
    sql = (
        f"select {day} as day, {persona} as persona, {route} as route, count(*) as requests, "
        "sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) as tokens, "
        "sum(coalesce(cost_usd, 0)) as usd from events where kind = 'sampling' and ts >= ? "
        f"group by {day}, {persona}, {route}"
    )
    return connection(db).select(sql, [since])


def _series(rows: list[dict[str, Any]], days: list[str], key: str, value: str, group: str) -> list[float]:
    per_day = dict.fromkeys(days, 0.0)
    for row in rows:
        if row[key] == group and row["day"] in per_day:
            per_day[row["day"]] += float(row[value] or 0)
    return [per_day[day] for day in days]


async def page(console: Console, request: Request, visitor: Visitor) -> Response:
    days = _days()
    none: list[dict[str, Any]] = []
    rows, problem = await console.read(lambda db: _sums(db, days[0]), none)
    budgets = console.registry.sampling.personas
    personas = sorted({str(r["persona"]) for r in rows} | set(budgets))
    routes = sorted({str(r["route"]) for r in rows})
    today = days[-1]
    summary = []
    for persona in personas:
        scope = budgets.get(persona)
        tokens = sum(float(r["tokens"] or 0) for r in rows if r["persona"] == persona and r["day"] == today)
        usd = sum(float(r["usd"] or 0) for r in rows if r["persona"] == persona and r["day"] == today)
        total = sum(float(r["usd"] or 0) for r in rows if r["persona"] == persona)
        token_budget = scope.tokens_per_day if scope is not None else None
        usd_budget = scope.usd_per_day if scope is not None else None
        summary.append(
            [
                esc(persona),
                esc(f"{tokens:,.0f}") + (f" of {token_budget:,}" if token_budget else ""),
                esc(f"${usd:.6f}") + (f" of ${usd_budget:g}" if usd_budget else ""),
                esc(f"${total:.6f}"),
            ]
        )
    body = [
        f'<p class="note">Sampling requests the gateway answered, per UTC day, the last {DAYS} days '
        "(budgets are per UTC day).</p>",
        table(
            ["persona", "tokens today", "cost today", f"cost ({DAYS} days)"],
            summary,
            numeric=(1, 2, 3),
            id="spend",
        ),
    ]
    for persona in personas:
        scope = budgets.get(persona)
        body.append(f'<section class="card" id="spend-{esc(persona)}"><h2>persona {esc(persona)}</h2>')
        body.append(
            bars(days, _series(rows, days, "persona", "usd", persona), title=f"{persona}: cost per day (USD)",
                 limit=scope.usd_per_day if scope else None, unit=" USD")
        )  # fmt: skip
        body.append(
            bars(days, _series(rows, days, "persona", "tokens", persona), title=f"{persona}: tokens per day",
                 limit=float(scope.tokens_per_day) if scope and scope.tokens_per_day else None)
        )  # fmt: skip
        body.append("</section>")
    for route in routes:
        body.append(f'<section class="card" id="route-{esc(route)}"><h2>route {esc(route)}</h2>')
        body.append(
            bars(
                days,
                _series(rows, days, "route", "usd", route),
                title=f"{route}: cost per day (USD)",
                unit=" USD",
            )
        )
        body.append("</section>")
    if not rows:
        body.append("<p>No sampling requests in this period.</p>")
    return render("Spend", "".join(body), active="spend", visitor=visitor, problem=problem)
