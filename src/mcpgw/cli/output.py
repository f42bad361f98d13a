"""What the commands print: the two consoles and the tables several commands share.

Owns: stdout for results (rich tables on a terminal, JSON with `--json`), stderr
for progress and warnings, and the tables of servers, tools and withheld items
that `serve`, `tools`, `personas` and `list-servers` show alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mcpgw.config import Registry

if TYPE_CHECKING:
    from mcpgw.security.poisoning import Finding

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def print_withheld(items: list[Any], console: Console) -> None:
    """What the pin/poisoning policy keeps from clients (see `mcpgw.pins`), and why."""
    _print_items(items, console, title="withheld: {n} (clients do not see these; see `mcpgw pin --diff`)")


def print_warned(items: list[Any], console: Console) -> None:
    """Prototype mode: what is served only with a warning, i.e. what production mode would withhold."""
    _print_items(
        items,
        console,
        title="served with warnings: {n} (production mode would withhold these; see `mcpgw pin --diff`)",
        reason="warning",
    )


def _print_items(items: list[Any], console: Console, *, title: str, reason: str = "reason") -> None:
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


def withheld_json(items: list[Any]) -> list[dict[str, str]]:
    return [{"kind": i.kind, "name": i.name, "server": i.server, "reason": i.reason} for i in items]


def status_rows(
    gateway: Any, registry: Registry, *, withheld: list[Any] | None = None, warned: list[Any] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for name, server in registry.servers.items():
        upstream = gateway.upstreams.get(name)
        rows.append(
            {
                "name": name,
                "kind": server.kind,
                "status": upstream.state if upstream else "disabled",
                "protocol": upstream.protocol_version if upstream else None,
                "era": upstream.era if upstream else None,
                "tools": len(upstream.lists["tools"]) if upstream else None,
                "error": upstream.error if upstream else None,
            }
        )
        if withheld is not None:
            rows[-1]["withheld"] = sum(1 for item in withheld if item.server == name)
        if warned is not None:
            rows[-1]["warned"] = sum(1 for item in warned if item.server == name)
    return rows


def print_servers(
    gateway: Any,
    console: Console,
    *,
    registry: Registry | None = None,
    withheld: list[Any] | None = None,
    warned: list[Any] | None = None,
) -> None:
    table = Table(title="upstream servers")
    columns = ("server", "kind", "status", "protocol", "tools", "error")
    extra = (("withheld",) if withheld is not None else ()) + (("warned",) if warned else ())
    for column in (*columns[:5], *extra, "error"):
        table.add_column(column)
    colours = {"ready": "green", "failed": "red", "disabled": "dim"}
    for row in status_rows(gateway, registry or gateway.registry, withheld=withheld, warned=warned):
        status = f"[{colours.get(row['status'], 'yellow')}]{row['status']}[/]"
        protocol = f"{row['protocol']} ({row['era']})" if row["protocol"] else "-"
        cells = [
            row["name"],
            row["kind"],
            status,
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
    gateway: Any,
    console: Console,
    *,
    tools: list[dict[str, Any]] | None = None,
    warned: Mapping[str, str] | None = None,
) -> None:
    """The tool table; `warned` (name -> reason) adds a column for tools served with a warning."""
    listed = gateway.catalog.tools if tools is None else tools
    table = Table(
        title=f"catalog: {len(listed)} tools, {len(gateway.catalog.resources)} "
        f"resources, {len(gateway.catalog.prompts)} prompts"
    )
    table.add_column("tool")
    table.add_column("description", overflow="fold")
    if warned:
        table.add_column("warning", overflow="fold", style="yellow")
    for tool in listed:
        description = (tool.get("description") or "").strip().splitlines()
        cells = [tool["name"], escape(description[0][:100]) if description else ""]
        if warned:
            cells.append(escape(warned.get(tool["name"], "")))
        table.add_row(*cells)
    console.print(table)
    print_problems(gateway, console)


def print_problems(gateway: Any, console: Console) -> None:
    for problem in gateway.catalog.problems:
        console.print(f"[yellow]warning:[/] {escape(str(problem))}")


def print_findings(findings: Iterable[Finding]) -> None:
    """What the poisoning checks flagged in a server's definitions (stderr: a warning, not a result)."""
    for finding in findings:
        err.print(f"[yellow]warning: possible tool poisoning:[/] {escape(str(finding))}")


def quiet_logs() -> None:
    from mcpgw.server.handlers import stderr_logging

    stderr_logging(logging.ERROR)
