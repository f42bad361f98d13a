"""`mcpgw personas`: list the personas, `draft` one from a job description, `explain` one in words.

`mcpgw personas [--json]` lists them as before (`catalog.show_personas`). `draft`
starts the servers for their catalog, asks a sampling route for a proposal
(`sampling.drafting`), and prints the draft after its guard rails as a table,
as the TOML it would write and as a diff of the registry; `--write` writes it
(`config.edit.persona_edit`), refusing to widen an existing persona unless
`--widen` says so. `explain` reads the rules alone and starts nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click
from rich.markup import escape
from rich.table import Table

from mcpgw.cli import progress
from mcpgw.cli.options import config_option, json_option, load_registry
from mcpgw.cli.output import err, out, quiet_logs

if TYPE_CHECKING:
    from mcpgw.catalog.drafts import Draft
    from mcpgw.config import Registry
    from mcpgw.sampling import Record


@click.group("personas", invoke_without_command=True)
@config_option
@json_option
@click.option(
    "--warnings", "all_warnings", is_flag=True, help="List every item served with a warning (else: one line)."
)
@click.pass_context
def personas(ctx: click.Context, config_path: Path | None, as_json: bool, all_warnings: bool) -> None:
    """Start every server and list the personas with what each one sees (or draft or explain one)."""
    if ctx.invoked_subcommand is not None:
        return
    from mcpgw.cli.catalog import show_personas

    show_personas(config_path, as_json=as_json, all_warnings=all_warnings)


def _config(config_path: Path | None) -> Path | None:
    """The subcommand's `--config`, else the group's (`mcpgw personas -c FILE draft ...`)."""
    if config_path is not None:
        return config_path
    given = _group_params().get("config_path")
    return given if isinstance(given, Path) else None


def _json(as_json: bool) -> bool:
    """The subcommand's `--json`, or the group's (`mcpgw personas --json explain ...`)."""
    return as_json or bool(_group_params().get("as_json"))


def _group_params() -> dict[str, Any]:
    parent = click.get_current_context().parent
    return dict(parent.params) if parent is not None else {}


@personas.command("draft")
@click.argument("name")
@click.option("--job", required=True, help="What the agent does, in plain words.")
@click.option(
    "--route", default=None, help="The sampling route to ask first (default: the configured order)."
)
@click.option("--write", is_flag=True, help="Write the draft into the registry (comments kept).")
@click.option(
    "--widen", is_flag=True, help="With --write: allow access the existing persona does not have today."
)
@config_option
@json_option
def draft(
    name: str, job: str, route: str | None, write: bool, widen: bool, config_path: Path | None, as_json: bool
) -> None:
    """Draft a least-privilege persona from a job description, through a sampling route."""
    from mcpgw.config.files import write_atomically
    from mcpgw.errors import RegistryError
    from mcpgw.sampling import drafting

    config_path, as_json = _config(config_path), _json(as_json)
    registry, path = load_registry(config_path)
    drafting.chain(registry, route)  # no route, or an unknown one: said before any server starts
    quiet_logs()
    made, record, shown = anyio.run(_draft, registry, path, name, job, route)
    toml, before, after = shown
    diff = _diff(before, after, path) if path is not None else None
    grows = [item.name for item in made.widens]
    refused = None
    if write and path is None:
        refused = "the registry is the shipped default: pass --config FILE to write a persona"
    elif write and grows and not widen:
        refused = (
            f"the draft gives persona {name!r} access it does not have today ({', '.join(grows)}); "
            "review it and pass --widen to write it"
        )
    if write and refused is None and path is not None:
        write_atomically(path, after)
    if as_json:
        out.print_json(
            data={
                **made.as_dict(),
                "toml": toml,
                "diff": diff,
                "written": write and refused is None,
                "usage": record.as_dict(),
            }
        )
    else:
        _print_draft(made, record, toml, diff)
        if write and refused is None:
            out.print(f"wrote [personas.{escape(name)}] to {escape(str(path))}")
    if refused is not None:
        raise RegistryError(refused)


async def _draft(
    registry: Registry, path: Path | None, name: str, job: str, route: str | None
) -> tuple[Draft, Record, tuple[str, str, str]]:
    from mcpgw import audit as audit_mod
    from mcpgw.assembly import build_gateway
    from mcpgw.catalog.drafts import persona_table
    from mcpgw.config.edit import persona_edit, persona_section
    from mcpgw.sampling import drafting

    built = build_gateway(registry, registry_path=path, purpose="listing")
    source = str(path) if path else "the shipped default registry"
    log = audit_mod.open_for(registry.audit, source=source, instance=str(path.resolve()) if path else None)
    try:
        async with built.gateway.running():
            with progress.starting(built.gateway.upstreams):
                await progress.follow(built.gateway.upstreams)
                await built.gateway.wait_started()
            gateway = built.gateway
            servers = drafting.described(registry, gateway.upstreams)
            made, record = await drafting.draft(
                registry, gateway.catalog, persona=name, job=job, servers=servers, route=route, audit=log
            )
            table = persona_table(made, gateway.catalog, registry.personas.get(name))
    finally:
        if log is not None:
            log.close()
    if path is None:  # the shipped default: nothing to diff against, the TOML is shown alone
        return made, record, (_section(name, table), "", "")
    before, after, _ = persona_edit(path, name, table)
    return made, record, (persona_section(after, name), before, after)


def _section(name: str, table: dict[str, Any]) -> str:
    import tomlkit

    return tomlkit.dumps({"personas": {name: table}})


def _diff(before: str, after: str, path: Path) -> str:
    import difflib

    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), str(path), f"{path} (draft)"
    )
    return "".join(lines)


def _print_draft(made: Draft, record: Record, toml: str, diff: str | None) -> None:
    mode = "read-only" if made.read_only else "may change things"
    table = Table(title=f"draft of persona {escape(made.persona)} ({mode})")
    for column in ("kind", "name", "access", "review", "reason"):
        table.add_column(column)
    for item in made.items:
        flags = [*(["review"] * item.review), *(["new access"] * item.widens)]
        table.add_row(item.kind, escape(item.name), item.access, ", ".join(flags), escape(item.reason))
    out.print(table)
    if not made.items:
        out.print("the draft keeps nothing: the persona would see no tool, resource or prompt")
    if made.dropped:
        dropped = Table(title="dropped by the guard rails")
        for column in ("kind", "name", "why"):
            dropped.add_column(column)
        for gone in made.dropped:
            dropped.add_row(gone.kind, escape(gone.name), escape(gone.why))
        out.print(dropped)
    if made.widens:
        names = ", ".join(item.name for item in made.widens)
        out.print(
            f"[yellow]widens:[/] persona {escape(made.persona)} does not reach these today: {escape(names)}"
        )
    out.print(escape(toml.rstrip()))
    if diff is not None:
        out.print(escape(diff.rstrip()) if diff else "no change to the registry")
    err.print(
        f"route {escape(record.route or '-')}: {record.input_tokens}+{record.output_tokens} tokens, "
        f"${record.cost_usd:.6f}"
    )


@personas.command("explain")
@click.argument("name")
@config_option
@json_option
def explain(name: str, config_path: Path | None, as_json: bool) -> None:
    """Say in words what a persona can and cannot do, from its rules (starts no server)."""
    from mcpgw.catalog.explain import explain as explain_persona

    registry, _ = load_registry(_config(config_path))
    said = explain_persona(registry, name)
    as_json = _json(as_json)
    if as_json:
        out.print_json(data=said.as_dict())
        return
    out.print(f"persona {escape(name)}" + (f": {escape(said.description)}" if said.description else ""))
    for title, lines in (("It can:", said.can), ("It cannot:", said.cannot)):
        if lines:
            out.print(title)
            for line in lines:
                out.print(f"  - {escape(line)}")
