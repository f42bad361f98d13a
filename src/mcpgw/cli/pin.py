"""`mcpgw pin`: pin, review (`--diff`) and accept (`--approve`) the upstreams' definitions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click
from rich.markup import escape

from mcpgw.cli import progress
from mcpgw.cli.options import config_option, json_option, load_registry
from mcpgw.cli.output import err, out, print_findings, quiet_logs
from mcpgw.errors import RegistryError
from mcpgw.observe.logs import counted
from mcpgw.security import pins

if TYPE_CHECKING:
    from mcpgw.security.review import ServerReview


@click.command()
@config_option
@click.argument("server", required=False)
@click.option(
    "--diff", "show_diff", is_flag=True, help="Show what changed since the pins (old vs new); write nothing."
)
@click.option(
    "--approve", is_flag=True, help="Accept the current definitions (changed, new, removed and flagged ones)."
)
@click.option("--tool", "tool_names", multiple=True, metavar="NAME", help="Only this tool (repeatable).")
@click.option(
    "--prompt", "prompt_names", multiple=True, metavar="NAME", help="Only this prompt (repeatable)."
)
@click.option(
    "--template",
    "template_names",
    multiple=True,
    metavar="URI",
    help="Only this resource template (repeatable).",
)
@json_option
def pin(
    config_path: Path | None,
    server: str | None,
    show_diff: bool,
    approve: bool,
    tool_names: tuple[str, ...],
    prompt_names: tuple[str, ...],
    template_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Pin the tool, prompt and resource-template definitions of SERVER (or every server) in the lock file.

    A server with no pins yet is pinned as it is (items the poisoning checks flag are left out);
    after that, any difference is accepted only with --approve, after reviewing it with --diff.
    With --tool/--prompt/--template (names as the server gives them, as --diff shows them),
    --approve accepts only those items and --diff shows only them; other changes stay pending.

    Exit code of --diff: 0 when every server matches its pins, 1 when one differs or has none.
    """
    from mcpgw.security import review
    from mcpgw.security.poisoning import scan_lists

    if show_diff and approve:
        raise RegistryError("--diff shows, --approve accepts: give one of them")
    selected = {"tools": tool_names, "prompts": prompt_names, "resource_templates": template_names}
    items = any(selected.values())
    if items and not (show_diff or approve):
        raise RegistryError("--tool, --prompt and --template choose what --approve accepts or --diff shows")
    if items and server is None:
        raise RegistryError("--tool, --prompt and --template need the SERVER they belong to")
    registry, path = load_registry(config_path)
    names = review.servers_to_pin(registry, server)
    lock_file = pins.lock_path(registry, path)
    lock = pins.read_lock(lock_file) or {}
    quiet_logs()
    with progress.starting(names):
        lists = anyio.run(lambda: review.collect_lists(registry, names, follow=progress.follow))
    action: review.Action = "diff" if show_diff else "approve" if approve else "pin"
    changed = False
    results: list[ServerReview] = []
    for name in names:
        findings = scan_lists(name, lists[name], max_length=registry.security.max_description)
        print_findings(findings)
        result = review.review(
            name, lock.get(name), lists[name], findings=findings, action=action, selected=selected
        )
        results.append(result)
        if not as_json:
            _show(result)
        if result.pins is not None:
            lock[name] = result.pins
            changed = True
    if changed:
        pins.write_lock(lock_file, lock)
        err.print(f"wrote {lock_file}")
    if as_json:
        out.print_json(data={"servers": [_data(result) for result in results], "lock_file": str(lock_file)})
    drifted = [result.server for result in results if result.changes or not result.was_pinned]
    if show_diff and drifted:  # for scripts, as `git diff --exit-code`: differences exit 1
        err.print(f"{len(drifted)} server(s) differ from their pins: {escape(', '.join(drifted))}")
        click.get_current_context().exit(1)


def _data(result: ServerReview) -> dict[str, object]:
    """One server's review as `--json` prints it."""

    def change(difference: pins.Change) -> dict[str, object]:
        kind = pins.KIND_OF[difference.list_name]
        return {"kind": kind, "name": difference.name, "status": difference.status, "diff": difference.diff()}

    return {
        "server": result.server,
        "action": result.action,
        "was_pinned": result.was_pinned,
        "changes": [change(difference) for difference in result.changes],
        "pending": [change(difference) for difference in result.pending],
        "pinned": result.pins is not None,
        "counts": {
            key: len(result.current.get(key, {})) for key in ("tools", "prompts", "resource_templates")
        },
        "flagged": [{"kind": pins.KIND_OF[list_name], "name": item} for list_name, item in result.flagged],
    }


def _show(result: ServerReview) -> None:
    """What `pin` did to one server, in the words of its action."""
    name = result.server
    if result.selective:
        for difference in result.changes if result.action == "diff" else ():
            _show_diff(difference)
        for difference in result.changes if result.action == "approve" else ():
            out.print(f"accepted: {escape(str(difference))}")
        for list_name, item in result.up_to_date:
            out.print(f"{name}: {pins.KIND_OF[list_name]} {item!r} is up to date")
        if result.pending:
            out.print(
                f"{name}: {len(result.pending)} other differences still pending "
                f"(`mcpgw pin --diff {name}` shows them)"
            )
    elif result.action == "diff":
        if not result.was_pinned:
            out.print(f"{name}: not pinned yet ({_counts(result.current)}); `mcpgw pin {name}` pins it")
        for difference in result.changes if result.was_pinned else []:
            _show_diff(difference)
        if result.was_pinned and not result.changes:
            out.print(f"{name}: up to date")
    elif result.action == "approve":
        for difference in result.changes:
            out.print(f"accepted: {escape(str(difference))}")
        out.print(f"{name}: {_counts(result.current)} pinned")
    elif result.was_pinned:
        if result.changes:
            out.print(
                f"{name}: {len(result.changes)} differences from its pins; review with "
                f"`mcpgw pin --diff {name}`, accept with `mcpgw pin --approve {name}`"
            )
        else:
            out.print(f"{name}: up to date")
    else:
        out.print(f"{name}: {_counts(result.pins or {})} pinned")
        for list_name, item in result.flagged:
            out.print(
                f"{name}: {pins.KIND_OF[list_name]} {item!r} flagged, not pinned; review it, then "
                f"`mcpgw pin --approve {name}`"
            )


def _show_diff(difference: pins.Change) -> None:
    out.print(f"[bold]{escape(str(difference))}[/]")
    out.print(escape(difference.diff()), end="", highlight=False)


def _counts(pinned: pins.ServerPins) -> str:
    kinds = (("tools", "tool"), ("prompts", "prompt"), ("resource_templates", "resource template"))
    return ", ".join(counted(len(pinned.get(kind, {})), noun) for kind, noun in kinds)
