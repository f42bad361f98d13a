"""The audit log: `mcpgw logs` (rows, filtered, followed, pruned) and `mcpgw stats` (summaries)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from mcpgw.audit import Outcome, printable
from mcpgw.cli.options import config_option, load_registry
from mcpgw.cli.output import err, out


@click.command()
@config_option
@click.option("--persona", help="Only this persona.")
@click.option("--server", help="Only this upstream server.")
@click.option("--tool", help="Only this tool, resource or prompt (as the client named it).")
@click.option(
    "--outcome",
    # The values, not the names: click matches an Enum's members by name.
    type=click.Choice([outcome.value for outcome in Outcome]),
    help="Only rows with this outcome.",
)
@click.option("--principal", help="Only rows whose principal (token subject and client) contains TEXT.")
@click.option("--since", help="ISO time (UTC), e.g. 2026-11-25T10:00.")
@click.option("--until", help="ISO time (UTC).")
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--prune", type=float, metavar="DAYS", help="Delete rows older than DAYS, then exit.")
def logs(
    config_path: Path | None,
    persona: str | None,
    server: str | None,
    tool: str | None,
    outcome: str | None,
    principal: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
    prune: float | None,
) -> None:
    """The audit log, newest first."""
    import time

    from mcpgw import audit

    registry, _ = load_registry(config_path)
    db = audit.open_for_reading(audit.path_for(registry.audit))
    if prune is not None:
        removed = audit.prune(db, prune)
        err.print(f"pruned {removed} rows older than {prune:g} days")
        return
    filters: dict[str, Any] = {
        "persona": persona,
        "server": server,
        "tool": tool,
        "outcome": outcome,
        "principal": principal,
    }
    rows = audit.query(db, since=since, until=until, limit=limit, **filters)
    _print_log_rows(list(reversed(rows)) if follow else rows, as_json)
    if not follow:
        return
    last = max((r["id"] for r in rows), default=0)
    try:
        while True:
            time.sleep(0.5)
            new = audit.query(db, after_id=last, limit=1000, newest_first=False, **filters)
            if new:
                _print_log_rows(new, as_json)
                last = new[-1]["id"]
    except KeyboardInterrupt:
        return


def _print_log_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    rows = [printable(row) for row in rows]
    if as_json:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False), highlight=False, soft_wrap=True, markup=False)
        return
    table = Table()
    # Who made the request is shown when the gateway knew (HTTP with [auth]); else the column is noise.
    principals = any(row.get("principal") for row in rows)
    columns = ["time", "kind", "persona", "server", "name", "outcome", "ms", "client", "error"]
    if principals:
        columns.insert(3, "principal")
    for column in columns:
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "denied": "yellow", "cancelled": "dim"}
    for row in rows:
        outcome = f"[{colours.get(row['outcome'], 'red')}]{escape(row['outcome'])}[/]"
        latency = "" if row["latency_ms"] is None else f"{row['latency_ms']:.1f}"
        cells = [
            str(row["ts"])[:23].replace("T", " "),
            escape(row["kind"] or ""),
            # Every stored text is escaped for rich: a persona path like `[link=...]` is data, not markup.
            escape(row["persona"] or ""),
            escape(row["server"] or ""),
            escape(row["name"] or ""),
            outcome,
            latency,
            escape(row["client"] or ""),
            escape(row["error"] or ""),
        ]
        if principals:
            cells.insert(3, escape(row.get("principal") or ""))
        table.add_row(*cells)
    out.print(table)


@click.command()
@config_option
@click.option("--since", help="ISO time (UTC).")
@click.option(
    "--by",
    "groups",
    multiple=True,
    type=click.Choice(["persona", "server", "tool", "principal"]),
    help="Only these groupings (repeatable). Default: all; per principal when any row has one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(config_path: Path | None, since: str | None, groups: tuple[str, ...], as_json: bool) -> None:
    """Calls, errors, p50/p95 ms per persona, server, tool, principal; sampling spend per persona, route."""
    from mcpgw import audit

    registry, _ = load_registry(config_path)
    db = audit.open_for_reading(audit.path_for(registry.audit))
    data = audit.stats(db, since=since)
    from mcpgw.audit import spend as sampling_spend

    spend = sampling_spend.summary(db, since=since)
    keys = {"persona": "persona", "server": "server", "tool": "name", "principal": "principal"}
    chosen = [keys[g] for g in groups or keys]
    if as_json:
        out.print_json(data={**{key: data[key] for key in chosen}, "sampling": spend})
        return
    if not groups and all(row["key"] == "-" for row in data["principal"]):
        chosen.remove("principal")  # no row has a principal (stdio, or HTTP without [auth]): no table
    titles = {
        "persona": "per persona",
        "server": "per server",
        "name": "per tool",
        "principal": "per principal",
    }
    for group in chosen:
        column = group if group != "name" else "tool"
        rows = [
            (row["key"], row["calls"], row["errors"], row["p50_ms"] or "-", row["p95_ms"] or "-")
            for row in data[group]
        ]
        out.print(_table(titles[group], (column, "calls", "errors", "p50 ms", "p95 ms"), rows))
    for group, title in (("persona", "sampling per persona"), ("route", "sampling per route")):
        if not spend[group] or groups:  # --by narrows the report to those call groupings
            continue
        rows = [
            (row["key"], row["requests"], row["errors"], row["tokens"], f"{row['cost_usd']:.6f}")
            for row in spend[group]
        ]
        out.print(_table(title, (group, "requests", "errors", "tokens", "cost USD"), rows))


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
    """A titled rich table; the first cell of each row is a key from the log, shown literally."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for key, *cells in rows:
        table.add_row(escape(str(key)), *(str(cell) for cell in cells))
    return table
