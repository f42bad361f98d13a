"""What the commands print: the two consoles and the tables several commands share.

Owns: stdout for results (rich tables on a terminal, JSON with `--json`), stderr
for progress and warnings, and the tables of servers, tools and withheld items
that `serve`, `tools`, `personas` and `list-servers` show alike.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mcpgw.core import status
from mcpgw.observe.logs import counted

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway
    from mcpgw.security.poisoning import Finding
    from mcpgw.security.trust import WithheldItem

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def print_withheld(items: list[WithheldItem], console: Console) -> None:
    """What the pin/poisoning policy keeps from clients (see `security.trust`), and why."""
    _print_items(items, console, title="withheld: {n} (clients do not see these; see `mcpgw pin --diff`)")


def print_warned(items: list[WithheldItem], console: Console) -> None:
    """Prototype mode: what is served only with a warning, i.e. what production mode would withhold."""
    _print_items(
        items,
        console,
        title="served with warnings: {n} (production mode would withhold these; see `mcpgw pin --diff`)",
        reason="warning",
    )


BLANKET_REASONS = frozenset({"there is no lock file", "its server has no pins"})
"""Warnings that say nothing about the item itself: with no lock file, every item has one."""


def split_warned(items: list[WithheldItem]) -> tuple[list[WithheldItem], list[WithheldItem]]:
    """(the items with a warning of their own: changed, new, flagged; those with a blanket one)."""
    return [i for i in items if i.reason not in BLANKET_REASONS], [
        i for i in items if i.reason in BLANKET_REASONS
    ]


def print_warned_line(items: list[WithheldItem], console: Console, *, listing: str) -> None:
    """Items with a blanket warning, in one line: the count, the reasons, and `listing`, the command
    that lists them all (a table of every item of an unpinned registry is noise)."""
    if not items:
        return
    reasons = Counter(item.reason for item in items)
    said = "; ".join(f"{count}: {escape(reason)}" for reason, count in sorted(reasons.items()))
    console.print(
        f"[yellow]served with warnings: {len(items)} (production mode would withhold these; {said}).[/] "
        f"`{escape(listing)}` lists them; `mcpgw pin` pins what you trust"
    )


def _print_items(items: list[WithheldItem], console: Console, *, title: str, reason: str = "reason") -> None:
    if not items:
        return
    table = Table(title=title.format(n=len(items)))
    table.add_column("kind")
    table.add_column("name", overflow="fold")
    table.add_column("server")
    table.add_column(reason, overflow="fold")
    for item in items:
        table.add_row(item.kind, escape(item.name), item.server, escape(item.reason))
    console.print(table)


def print_servers(
    gateway: Gateway,
    console: Console,
    *,
    withheld: list[WithheldItem] | None = None,
    warned: list[WithheldItem] | None = None,
) -> None:
    """The upstreams' status; `withheld` and `warned` add their counts per server."""
    table = Table(title="upstream servers")
    columns = ("server", "kind", "status", "protocol", "tools", "error")
    extra = (("withheld",) if withheld is not None else ()) + (("warned",) if warned else ())
    for column in (*columns[:5], *extra, "error"):
        table.add_column(column)
    colours = {"ready": "green", "failed": "red", "disabled": "dim"}
    for row in status.server_rows(gateway, withheld=withheld, warned=warned):
        state = f"[{colours.get(row['status'], 'yellow')}]{row['status']}[/]"
        protocol = f"{row['protocol']} ({row['era']})" if row["protocol"] else "-"
        cells = [
            row["name"],
            row["kind"],
            state,
            protocol,
            "-" if row["tools"] is None else str(row["tools"]),
        ]
        if withheld is not None:
            cells.append(str(row["withheld"]))
        if warned:
            cells.append(str(row["warned"]))
        table.add_row(*cells, escape(row["error"] or ""))
    console.print(table)


def print_tools(
    gateway: Gateway,
    console: Console,
    *,
    tools: list[dict[str, Any]] | None = None,
    warned: Mapping[str, str] | None = None,
    labels: Mapping[str, list[str]] | None = None,
) -> None:
    """The tool table; `warned` (name -> reason) adds a column for tools served with a warning,
    `labels` (name -> flow labels) one for the tools' flow labels."""
    listed = gateway.catalog.tools if tools is None else tools
    catalog = gateway.catalog
    counts = (
        counted(len(listed), "tool"),
        counted(len(catalog.resources), "resource"),
        counted(len(catalog.prompts), "prompt"),
    )
    table = Table(title=f"catalog: {', '.join(counts)}")
    table.add_column("tool")
    table.add_column("description", overflow="fold")
    if labels:
        table.add_column("flow labels")
    if warned:
        table.add_column("warning", overflow="fold", style="yellow")
    for tool in listed:
        description = (tool.get("description") or "").strip().splitlines()
        cells = [tool["name"], escape(description[0][:100]) if description else ""]
        if labels:
            cells.append(", ".join(labels.get(tool["name"], ())))
        if warned:
            cells.append(escape(warned.get(tool["name"], "")))
        table.add_row(*cells)
    console.print(table)
    print_problems(gateway, console)


def print_problems(gateway: Gateway, console: Console) -> None:
    for problem in gateway.catalog.problems:
        console.print(f"[yellow]warning:[/] {escape(str(problem))}")


def print_findings(findings: Iterable[Finding]) -> None:
    """What the poisoning checks flagged in a server's definitions (stderr: a warning, not a result)."""
    for finding in findings:
        err.print(f"[yellow]warning: possible tool poisoning:[/] {escape(str(finding))}")


def quiet_logs() -> None:
    """Commands that start upstreams: errors only, and none about upstreams starting or failing,
    which the progress lines (`cli.progress`) and the result already show once each."""
    from mcpgw.server.lifecycle import stderr_logging

    stderr_logging(logging.ERROR)
    logging.getLogger("mcpgw.upstream").setLevel(logging.CRITICAL)
