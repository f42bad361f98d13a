"""The audit log: `mcpgw logs` (rows, filtered, followed, pruned) and `mcpgw stats` (summaries).

Output: a rich table on a terminal; elsewhere (a pipe, a file) one tab-separated line per
row under one header line, so nothing is wrapped to the width of a terminal that is not
there; `--follow` prints lines under one header on a terminal too (a table cannot grow);
`--json` one object per line. Times are parsed by `audit.times`, so a bad one is an error,
never a string comparison that matches everything or nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from mcpgw.audit import Kind, Outcome, printable
from mcpgw.audit import shown as shown_text
from mcpgw.audit import times as audit_times
from mcpgw.audit.fields import FIELD_CHARS
from mcpgw.cli.options import config_option, json_option, load_registry
from mcpgw.cli.output import err, out
from mcpgw.observe.logs import counted


class _Time(click.ParamType[str]):
    """A `--since`/`--until` value, checked when the command line is read (see `audit.times`)."""

    name = "TIME"

    def __init__(self, *, end: bool = False) -> None:
        self.end = end

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return audit_times.parse(str(value), end=self.end)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_SINCE_HELP = "Rows from this time on: 1h, 2d, today, yesterday, or ISO (local unless it says Z or +hh:mm)."


def _days(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter(f"{value:g} is not a number of days (0 or more)", param_hint="'--prune'")
    return value


@click.command()
@config_option
@click.option("--persona", help="Only this persona.")
@click.option("--server", help="Only this upstream server.")
@click.option("--tool", help="Only this tool, resource or prompt (as the client named it; search mode too).")
@click.option("--kind", type=click.Choice([kind.value for kind in Kind]), help="Only rows of this kind.")
@click.option(
    "--outcome",
    # The values, not the names: click matches an Enum's members by name.
    type=click.Choice([outcome.value for outcome in Outcome]),
    help="Only rows with this outcome.",
)
@click.option("--principal", help="Only rows whose principal (token subject and client) contains TEXT.")
@click.option(
    "--session",
    help="One agent session's steps, in order (its MCP session id, or the id `logs --json` shows).",
)
@click.option("--parent", help="The steps one workflow call ran (its request id), in order.")
@click.option("--instance", help="Only rows this gateway wrote (its registry path, or `[audit] instance`).")
@click.option("--since", type=_Time(), help=_SINCE_HELP)
@click.option("--until", type=_Time(end=True), help="Rows before this time (same forms; a date: its end).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new rows (Ctrl+C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--prune",
    type=float,
    metavar="DAYS",
    help="Delete rows older than DAYS, then exit (0: every row, --yes).",
)
@click.option("--yes", is_flag=True, help="With --prune 0: yes, delete every row.")
@click.option(
    "--datasette-metadata",
    "datasette",
    is_flag=True,
    help="Print Datasette metadata for the audit database (labels, facets, spend and refusal queries).",
)
def logs(
    config_path: Path | None,
    persona: str | None,
    server: str | None,
    tool: str | None,
    kind: str | None,
    outcome: str | None,
    principal: str | None,
    session: str | None,
    parent: str | None,
    instance: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
    prune: float | None,
    yes: bool,
    datasette: bool,
) -> None:
    """The audit log, newest first (oldest first with --follow or --session)."""
    from mcpgw import audit

    if datasette:
        from mcpgw.audit import dashboard

        registry, _ = load_registry(config_path)
        if registry.audit.url:  # Datasette opens SQLite files only
            raise click.UsageError(
                "--datasette-metadata is for a SQLite audit log; [audit] url is PostgreSQL"
            )
        out.print_json(data=dashboard.metadata(audit.path_for(registry.audit)))
        return

    filters: dict[str, Any] = {
        "persona": persona,
        "server": server,
        "tool": tool,
        "kind": kind,
        "outcome": outcome,
        "principal": principal,
        "session": session,
        "parent": parent,
        "instance": instance,
        "since": since,
        "until": until,
    }
    if since is not None and until is not None and until <= since:  # both are UTC instants, one shape
        raise click.UsageError("--until is not after --since: no row could match")
    if prune is not None:
        _days(prune)
        given = [f"--{name}" for name, value in filters.items() if value is not None] + ["--follow"] * follow
        if given:
            # Pruning deletes by age alone: a filter would suggest it deletes only the matching rows.
            raise click.UsageError(
                f"--prune deletes every row older than DAYS; it takes no {', '.join(given)}"
            )
        if prune == 0 and not yes:
            raise click.UsageError("--prune 0 deletes every row of the audit log; add --yes to do that")
    registry, _ = load_registry(config_path)
    store = audit.store_for(registry.audit)
    db = audit.open_for_reading(store)
    if prune is not None:
        removed = audit.prune(db, prune)
        err.print(f"pruned {counted(removed, 'row')} older than {counted(prune, 'day')}")
        return
    rows = [printable(row) for row in audit.query(db, limit=limit, **filters)]
    if (session is not None or parent is not None) and not follow:
        # A session (or a workflow call's steps) reads as a story: its last `limit` steps, first to last.
        rows.reverse()
    if not follow:
        if not rows:
            err.print("no rows" + (" match these filters" if any(filters.values()) else ""))
        elif as_json:
            _print_json(rows)
        elif out.is_terminal:
            out.print(_table(rows))
        else:
            _Lines(rows, aligned=False).print(rows)
        return
    _follow(store, db, list(reversed(rows)), filters, as_json=as_json)


def _follow(
    store: Any, db: Any, rows: list[dict[str, Any]], filters: dict[str, Any], *, as_json: bool
) -> None:
    """Print `rows`, then every new row as it lands, under the one header printed first. A database
    that stops answering (a server restarting, a file locked) is said once and retried, not fatal."""
    import time

    from mcpgw import audit

    lines = None if as_json else _Lines(rows, aligned=out.is_terminal, every=True)
    if lines is not None:
        lines.header()
    if not rows:
        err.print("no rows yet; waiting for new ones (Ctrl+C stops)")
    # Where new rows start: after the newest row of the table, not only of those shown.
    last = max((r["id"] for r in audit.query(db, limit=1)), default=0)
    try:
        while True:
            if rows and lines is None:
                _print_json(rows)
            elif rows and lines is not None:
                lines.print(rows)
            if rows:
                last = max(last, rows[-1]["id"])
            out.file.flush()  # a pipe is block-buffered: each batch is seen as it comes
            time.sleep(0.5)
            try:
                db = db or store.connect()
                found = audit.query(db, after_id=last, limit=1000, newest_first=False, **filters)
            except audit.StoreError as exc:
                if db is not None:
                    err.print(f"the audit database stopped answering ({exc}); retrying")
                    db.close()
                db, rows = None, []
                continue
            rows = [printable(row) for row in found]
    except KeyboardInterrupt:
        return


def _print_json(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        out.print(json.dumps(row, ensure_ascii=False), highlight=False, soft_wrap=True, markup=False)


def _columns(rows: Sequence[dict[str, Any]], *, every: bool = False) -> list[str]:
    """The columns shown; who asked (principal), which gateway (instance) and what sampling cost
    (tokens, usd) only where they tell something: some row has a principal, the rows come from more
    than one gateway, some row is a sampling request."""
    columns = ["time", "kind", "persona", "server", "name", "outcome", "ms", "client", "error"]
    if every or any(row.get("kind") == "sampling" for row in rows):
        columns[-1:-1] = ["tokens", "usd"]
    if every or any(row.get("principal") for row in rows):
        columns.insert(3, "principal")
    if every or len({row.get("instance") for row in rows}) > 1:
        columns.insert(1, "instance")
    return columns


def _cells(row: dict[str, Any]) -> dict[str, str]:
    latency, cost = row.get("latency_ms"), row.get("cost_usd")
    tokens: list[int] = [row[key] for key in ("input_tokens", "output_tokens") if row.get(key) is not None]
    return {
        "tokens": str(sum(tokens)) if tokens else "",
        "usd": "" if cost is None else f"{cost:.6f}",
        "time": audit_times.shown(str(row["ts"])),
        "ms": "" if latency is None else f"{latency:.1f}",
        "name": str(row.get("name") or ""),
        **{
            column: str(row.get(column) or "")
            for column in ("instance", "kind", "persona", "principal", "server", "outcome", "client", "error")
        },
    }


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    columns = _columns(rows)
    for column in columns:
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "denied": "yellow", "cancelled": "dim"}
    for row in rows:
        cells = _cells(row)
        # Every stored text is escaped for rich: a persona path like `[link=...]` is data, not markup.
        shown = {column: escape(text) for column, text in cells.items()}
        shown["outcome"] = f"[{colours.get(cells['outcome'], 'red')}]{shown['outcome']}[/]"
        table.add_row(*(shown[column] for column in columns))
    return table


_WIDTHS = {"time": 23, "instance": 16, "kind": 9, "persona": 12, "principal": 16, "server": 12}
_WIDTHS |= {"name": 28, "outcome": 9, "ms": 8, "client": 14, "tokens": 8, "usd": 10}


class _Lines:
    """Rows as plain lines under one header: tab-separated (a pipe, a file), or in fixed-width
    columns on a terminal (`--follow`), the last column (the error) unbounded."""

    def __init__(self, rows: Sequence[dict[str, Any]], *, aligned: bool, every: bool = False) -> None:
        self.columns = _columns(rows, every=every)
        self.aligned = aligned
        self._printed_header = False

    def _line(self, cells: Sequence[str]) -> str:
        if not self.aligned:
            return "\t".join(cells)
        fitted = []
        for column, text in zip(self.columns[:-1], cells[:-1], strict=True):
            width = _WIDTHS[column]
            fitted.append((text if len(text) <= width else text[: width - 1] + "…").ljust(width))
        return "  ".join([*fitted, cells[-1]])

    def header(self) -> None:
        if not self._printed_header:
            self._printed_header = True
            self._write(self.columns)

    def print(self, rows: Sequence[dict[str, Any]]) -> None:
        self.header()
        for row in rows:
            cells = _cells(row)
            self._write([cells[column] for column in self.columns])

    def _write(self, cells: Sequence[str]) -> None:
        # Past rich, which would expand the tabs; the cells are escaped already (`printable`).
        out.file.write(self._line(cells) + "\n")


@click.command()
@config_option
@click.option("--since", type=_Time(), help=_SINCE_HELP)
@click.option(
    "--by",
    "groups",
    multiple=True,
    type=click.Choice(["persona", "server", "tool", "principal", "instance"]),
    help="Only these groupings (repeatable). Default: all; per principal or instance when rows differ in it.",
)
@json_option
def stats(config_path: Path | None, since: str | None, groups: tuple[str, ...], as_json: bool) -> None:
    """Calls, errors, p50/p95 ms per persona, server, tool, principal; sampling spend per persona, route."""
    from mcpgw import audit

    registry, _ = load_registry(config_path)
    db = audit.open_for_reading(audit.store_for(registry.audit))
    data = audit.stats(db, since=since)
    from mcpgw.audit import spend as sampling_spend

    spend = sampling_spend.summary(db, since=since)
    keys = {"persona": "persona", "server": "server", "tool": "name", "principal": "principal"}
    keys["instance"] = "instance"
    chosen = [keys[g] for g in groups or keys]
    if as_json:
        out.print_json(data={**{key: data[key] for key in chosen}, "sampling": spend})
        return
    if not groups and all(row["key"] == "-" for row in data["principal"]):
        chosen.remove("principal")  # no row has a principal (stdio, or HTTP without [auth]): no table
    if not groups and len(data["instance"]) < 2:
        chosen.remove("instance")  # one gateway wrote every row: the table would say nothing
    if not any(data[group] for group in chosen) and not any(spend.values()):
        err.print("no rows" + (" since then" if since else ""))
        return
    titles = {
        "persona": "per persona",
        "server": "per server",
        "name": "per tool",
        "principal": "per principal",
        "instance": "per instance",
    }
    for group in chosen:
        column = group if group != "name" else "tool"
        rows = [
            (row["key"], row["calls"], row["errors"], row["p50_ms"] or "-", row["p95_ms"] or "-")
            for row in data[group]
        ]
        _print_group(titles[group], (column, "calls", "errors", "p50 ms", "p95 ms"), rows)
    for group, title in (("persona", "sampling per persona"), ("route", "sampling per route")):
        if not spend[group] or groups:  # --by narrows the report to those call groupings
            continue
        rows = [
            (row["key"], row["requests"], row["errors"], row["tokens"], f"{row['cost_usd']:.6f}")
            for row in spend[group]
        ]
        _print_group(title, (group, "requests", "errors", "tokens", "cost USD"), rows)


def _print_group(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """One summary: a titled rich table on a terminal; elsewhere the title, then a tab-separated
    header and rows (a key from the log is shown literally, escaped as `printable` escapes it)."""
    if not out.is_terminal:
        lines = [title, "\t".join(columns)]
        lines += ["\t".join(shown_text(str(cell), FIELD_CHARS) for cell in row) for row in rows]
        out.file.write("\n".join(lines) + "\n\n")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for key, *cells in rows:
        table.add_row(escape(str(key)), *(str(cell) for cell in cells))
    out.print(table)
