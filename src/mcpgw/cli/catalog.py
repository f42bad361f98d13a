"""The catalog views: `mcpgw tools`, `list-servers`, and the listing of `mcpgw personas`.

Each starts the gateway as `serve` would (the same assembly, pins and poisoning
policy), prints what it serves (the rows come from `core.status`), and stops it;
`list-servers` without `--check` only reads the registry.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click
from rich.markup import escape
from rich.table import Table

from mcpgw.cli import progress
from mcpgw.cli.options import config_option, json_option, load_registry
from mcpgw.cli.output import (
    err,
    out,
    print_problems,
    print_servers,
    print_tools,
    print_warned,
    print_warned_line,
    print_withheld,
    quiet_logs,
    split_warned,
)
from mcpgw.config import Registry
from mcpgw.core import status
from mcpgw.errors import UpstreamError
from mcpgw.observe.logs import counted

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway
    from mcpgw.security.trust import Trust


async def _started_gateway(
    registry: Registry, body: Callable[[Gateway, Trust], None], registry_path: Path | None
) -> None:
    """Start the gateway, filtered by the same pin/poisoning policy as `serve`; `body(gateway, trust)`."""
    from mcpgw.assembly import build_gateway

    built = build_gateway(registry, registry_path=registry_path, purpose="listing")
    async with built.gateway.running():
        with progress.starting(built.gateway.upstreams):
            await progress.follow(built.gateway.upstreams)
            await built.gateway.wait_started()
        body(built.gateway, built.trust)


@click.command()
@config_option
@click.option("--persona", "-p", default=None, help="Show what this persona sees.")
@json_option
@click.option(
    "--warnings", "all_warnings", is_flag=True, help="List every item served with a warning (else: one line)."
)
def tools(config_path: Path | None, persona: str | None, as_json: bool, all_warnings: bool) -> None:
    """Start every server and print the merged tool catalog (or a persona's view of it)."""
    registry, path = load_registry(config_path)

    def show(gateway: Gateway, trust: Trust) -> None:
        warnings = gateway.check_personas()
        view = gateway.view(persona)
        withheld = trust.withheld_from(gateway, persona)
        warned = trust.warned_to(gateway, persona)
        if as_json:
            problems = [str(p) for p in gateway.catalog.problems] + warnings
            data = {
                "tools": view.listed_tools,
                "problems": problems,
                "withheld": status.item_rows(withheld),
                "warned": status.item_rows(warned),
                "labels": status.tool_labels(gateway, view),
            }
            out.print_json(data=data)
        else:
            shown, blanket = (warned, []) if all_warnings else split_warned(warned)
            tool_warnings = status.tool_warnings(view, shown)
            labels = status.tool_labels(gateway, view)
            print_tools(gateway, out, tools=view.listed_tools, warned=tool_warnings, labels=labels)
            print_warned([item for item in shown if item.kind != "tool"], out)
            print_warned_line(blanket, out, listing=_listing("mcpgw tools", config_path, persona))
            print_withheld(withheld, out)
            for warning in warnings:
                out.print(f"[yellow]warning:[/] {escape(warning)}")

    quiet_logs()
    anyio.run(_started_gateway, registry, show, path)


def _listing(command: str, config_path: Path | None, persona: str | None = None) -> str:
    """The command line that lists every warning: the one that was run, with `--warnings`."""
    words = command.split()
    words[2:2] = ["-c", shlex.quote(str(config_path))] if config_path else []
    words += ["--persona", shlex.quote(persona)] if persona else []
    return " ".join([*words, "--warnings"])


def show_personas(config_path: Path | None, *, as_json: bool, all_warnings: bool) -> None:
    """`mcpgw personas`: start every server and list the personas with what each one sees."""
    registry, path = load_registry(config_path)

    def show(gateway: Gateway, trust: Trust) -> None:
        warnings = gateway.check_personas()
        rows = status.persona_rows(gateway, trust)
        if as_json:
            out.print_json(data={"personas": rows, "warnings": warnings})
            return
        held = f", {counted(len(trust.withheld_items), 'item')} withheld" if trust.withheld_items else ""
        if trust.warned_items:
            held += f", {counted(len(trust.warned_items), 'item')} served with warnings"
        table = Table(
            title=f"personas ({counted(len(gateway.catalog.tools), 'tool')} in the full catalog{held})"
        )
        columns = ["persona", "catalog", "servers", "tools", "resources", "prompts", "overrides", "withheld"]
        if trust.warned_items:
            columns.append("warned")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["persona"],
                row["catalog"] + (", read-only" if row["read_only"] else ""),
                ", ".join(row["servers"]),
                str(row["tools"]),
                str(row["resources"] + row["resource_templates"]),
                str(row["prompts"]),
                str(row["overrides"]),
                str(len(row["withheld"])),
                *([str(len(row["warned"]))] if trust.warned_items else []),
            )
        out.print(table)
        if not rows:
            out.print("no personas configured: every client sees the whole catalog")
        shown, blanket = (trust.warned_items, []) if all_warnings else split_warned(trust.warned_items)
        print_warned(shown, out)
        print_warned_line(blanket, out, listing=_listing("mcpgw personas", config_path))
        print_withheld(trust.withheld_items, out)
        for warning in warnings:
            out.print(f"[yellow]warning:[/] {escape(warning)}")

    quiet_logs()
    anyio.run(_started_gateway, registry, show, path)


@click.command("list-servers")
@config_option
@click.option("--check", is_flag=True, help="Connect to each enabled server and show its status.")
@json_option
@click.option(
    "--warnings", "all_warnings", is_flag=True, help="List every item served with a warning (else: one line)."
)
def list_servers(config_path: Path | None, check: bool, as_json: bool, all_warnings: bool) -> None:
    """List the servers in the registry."""
    registry, path = load_registry(config_path)
    if not check:
        rows = status.registry_rows(registry)
        if as_json:
            out.print_json(data={"servers": rows})
            return
        table = Table(title=f"servers in {path or 'the shipped default registry'}")
        for column in ("name", "kind", "target", "enabled", "namespace"):
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row[c]) for c in ("name", "kind", "target", "enabled", "namespace")))
        out.print(table)
        return

    failed: list[str] = []

    def show(gateway: Gateway, trust: Trust) -> None:
        # Any enabled server not ready once the start settled failed it (`restarting`: failed, retried).
        rows = status.server_rows(gateway)
        failed.extend(row["name"] for row in rows if row["status"] not in ("ready", "disabled"))
        if as_json:
            out.print_json(
                data={
                    "servers": status.server_rows(
                        gateway, withheld=trust.withheld_items, warned=trust.warned_items
                    ),
                    "problems": [str(p) for p in gateway.catalog.problems],
                    "withheld": status.item_rows(trust.withheld_items),
                    "warned": status.item_rows(trust.warned_items),
                }
            )
        else:
            print_servers(gateway, out, withheld=trust.withheld_items, warned=trust.warned_items)
            print_problems(gateway, out)
            shown, blanket = (trust.warned_items, []) if all_warnings else split_warned(trust.warned_items)
            print_warned(shown, out)
            print_warned_line(blanket, out, listing=_listing("mcpgw list-servers --check", config_path))
            print_withheld(trust.withheld_items, out)

    quiet_logs()
    anyio.run(_started_gateway, registry, show, path)
    if failed:  # for scripts: the exit code of an upstream failure (see errors.UpstreamError)
        err.print(f"[red]{len(failed)} server(s) not ready:[/] {escape(', '.join(failed))}")
        click.get_current_context().exit(UpstreamError.exit_code)
