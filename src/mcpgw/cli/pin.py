"""`mcpgw pin`: pin, review (`--diff`) and accept (`--approve`) the upstreams' definitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import click
from rich.markup import escape

from mcpgw.cli.options import config_option, load_registry
from mcpgw.cli.output import err, out, quiet_logs
from mcpgw.config import Registry
from mcpgw.errors import RegistryError


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
def pin(
    config_path: Path | None,
    server: str | None,
    show_diff: bool,
    approve: bool,
    tool_names: tuple[str, ...],
    prompt_names: tuple[str, ...],
    template_names: tuple[str, ...],
) -> None:
    """Pin the tool, prompt and resource-template definitions of SERVER (or every server) in the lock file.

    A server with no pins yet is pinned as it is (items the poisoning checks flag are left out);
    after that, any difference is accepted only with --approve, after reviewing it with --diff.
    With --tool/--prompt/--template (names as the server gives them, as --diff shows them),
    --approve accepts only those items and --diff shows only them; other changes stay pending.
    """
    from mcpgw.security import pins
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
    if server is not None and server not in registry.servers:
        raise RegistryError(f"no server named {server!r} (known: {', '.join(registry.servers) or 'none'})")
    if server is not None and not registry.servers[server].enabled:
        raise RegistryError(f"server {server!r} is disabled; enable it to pin it")
    names = [server] if server is not None else list(registry.enabled_servers())
    lock_file = pins.lock_path(registry, path)
    lock = pins.read_lock(lock_file) or {}
    quiet_logs()
    lists = anyio.run(_collect_lists, registry, names)
    max_length = registry.security.max_description
    changed = False
    for name in names:
        current = pins.snapshot(lists[name])
        findings = scan_lists(name, lists[name], max_length=max_length)
        differences = pins.changes(name, lock.get(name), current)
        for finding in findings:
            err.print(f"[yellow]warning: possible tool poisoning:[/] {escape(str(finding))}")
        if items:
            lock[name], accepted, pending = pins.approve(name, lock.get(name), current, selected)
            for difference in accepted if show_diff else ():
                out.print(f"[bold]{escape(str(difference))}[/]")
                out.print(escape(difference.diff()), end="", highlight=False)
            for difference in accepted if approve else ():
                out.print(f"accepted: {escape(str(difference))}")
            chosen = {(ln, n) for ln, names in selected.items() for n in names}
            for list_name, item in sorted(chosen - {(d.list_name, d.name) for d in accepted}):
                out.print(f"{name}: {pins.KIND_OF[list_name]} {item!r} is up to date")
            if pending:
                out.print(
                    f"{name}: {len(pending)} other differences still pending "
                    f"(`mcpgw pin --diff {name}` shows them)"
                )
            changed = changed or (approve and bool(accepted))
            continue
        if show_diff:
            if name not in lock:
                out.print(f"{name}: not pinned yet ({_counts(current)}); `mcpgw pin {name}` pins it")
            for difference in differences if name in lock else []:
                out.print(f"[bold]{escape(str(difference))}[/]")
                out.print(escape(difference.diff()), end="", highlight=False)
            if name in lock and not differences:
                out.print(f"{name}: up to date")
            continue
        if approve:
            for difference in differences:
                out.print(f"accepted: {escape(str(difference))}")
            if differences or name not in lock:
                lock[name] = current
                changed = True
            out.print(f"{name}: {_counts(current)} pinned")
            continue
        if name in lock:
            if differences:
                out.print(
                    f"{name}: {len(differences)} differences from its pins; review with "
                    f"`mcpgw pin --diff {name}`, accept with `mcpgw pin --approve {name}`"
                )
            else:
                out.print(f"{name}: up to date")
            continue
        flagged = {(_LIST_OF_KIND[f.kind], f.name) for f in findings if f.kind in _LIST_OF_KIND}
        kept = {
            list_name: {item: p for item, p in entries.items() if (list_name, item) not in flagged}
            for list_name, entries in current.items()
        }
        lock[name] = kept
        changed = True
        out.print(f"{name}: {_counts(kept)} pinned")
        for list_name, item in sorted(flagged):
            out.print(
                f"{name}: {pins.KIND_OF[list_name]} {item!r} flagged, not pinned; review it, then "
                f"`mcpgw pin --approve {name}`"
            )
    if changed:
        pins.write_lock(lock_file, lock)
        err.print(f"wrote {lock_file}")


_LIST_OF_KIND = {"tool": "tools", "prompt": "prompts", "resource_template": "resource_templates"}


def _counts(pinned: Any) -> str:
    return ", ".join(
        f"{len(pinned.get(k, {}))} {k.replace('_', ' ')}" for k in ("tools", "prompts", "resource_templates")
    )


async def _collect_lists(registry: Registry, names: list[str]) -> dict[str, Any]:
    """Start the named servers, take their lists, stop them; a server that does not start is an error."""
    from mcpgw.errors import UpstreamUnavailable
    from mcpgw.upstream import credentials
    from mcpgw.upstream.session import for_server

    secrets = credentials.load_secrets(registry.gateway)
    upstreams = [
        for_server(name, registry.servers[name], registry, secrets=secrets, restart=False) for name in names
    ]
    async with anyio.create_task_group() as tg:
        for upstream in upstreams:
            tg.start_soon(upstream.run)
        for upstream in upstreams:
            await upstream.wait_settled()
        failed = [u for u in upstreams if u.state != "ready"]
        lists = {u.name: {k: list(v) for k, v in u.lists.items()} for u in upstreams}
        for upstream in upstreams:
            upstream.stop()
    if failed:
        raise UpstreamUnavailable(
            failed[0].name, f"did not start ({failed[0].error}); the lock file is unchanged"
        )
    return lists
