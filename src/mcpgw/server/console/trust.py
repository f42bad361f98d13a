"""The Trust page: pending pin changes as diffs with approve buttons, and poisoning findings.

Owns: for each upstream the gateway has lists of, how its definitions differ from the lock file
(new, changed, removed; a unified diff each, as `mcpgw pin --diff` shows), what the poisoning
checks flag in them, and the approve action, which writes the lock file exactly as
`mcpgw pin --approve SERVER [--tool NAME]` would (`security.review`). The serving gateway
watches the lock file, so an approved item is served (and announced) within a second.

An approval accepts what the reviewer saw: each form carries the digest of the definitions its
diff showed, and an upstream that changed them again since is refused, not approved unseen.
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from mcpgw.audit import Outcome
from mcpgw.errors import GatewayError, RegistryError
from mcpgw.observe.logs import counted
from mcpgw.security import pins, poisoning, review
from mcpgw.security.pins import Change, ServerPins
from mcpgw.server.console.access import Visitor
from mcpgw.server.console.context import Console
from mcpgw.server.console.layout import button_form, esc, render, table


def _lists(console: Console, server: str) -> dict[str, list[dict[str, Any]]] | None:
    upstream = console.gateway.upstreams.get(server)
    if upstream is None or not upstream.served:
        return None
    return {kind: list(items) for kind, items in upstream.lists.items()}


def _lock_file(console: Console) -> Any:
    trust = console.gateway.trust
    return trust.path if trust is not None else pins.lock_path(console.registry, console.registry_path)


def _seal(changes: list[Change]) -> str:
    """A digest of what a set of changes shows: what the reviewer approves must still be it."""
    text = "\n".join(f"{c.list_name}/{c.name}/{c.new.sha256 if c.new else '-'}" for c in changes)
    return hashlib.sha256(text.encode()).hexdigest()


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        kind = "add" if line.startswith("+") and not line.startswith("+++") else ""
        kind = "del" if line.startswith("-") and not line.startswith("---") else kind
        lines.append(f'<span class="{kind}">{esc(line)}</span>')
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"


def _pending(
    console: Console, server: str, lists: dict[str, list[dict[str, Any]]]
) -> tuple[bool, list[Change]]:
    lock = pins.read_lock(_lock_file(console)) or {}
    pinned: ServerPins | None = lock.get(server)
    return pinned is not None, pins.changes(server, pinned, pins.snapshot(lists))


async def page(
    console: Console,
    request: Request,
    visitor: Visitor,
    *,
    flash: str | None = None,
    problem: str | None = None,
) -> Response:
    body: list[str] = []
    try:
        lock_file = _lock_file(console)
        any_pending = False
        for server in console.gateway.upstreams:
            lists = _lists(console, server)
            if lists is None:
                continue
            was_pinned, changes = await anyio.to_thread.run_sync(_pending, console, server, lists)
            findings = poisoning.scan_lists(
                server, lists, max_length=console.registry.security.max_description
            )
            if not changes and not findings:
                continue
            any_pending = any_pending or bool(changes)
            body.append(f'<section class="card" id="trust-{esc(server)}"><h2>{esc(server)}</h2>')
            if changes:
                what = (
                    "not pinned yet: approving pins what it serves now"
                    if not was_pinned
                    else counted(len(changes), "change")
                )
                body.append(
                    f"<p>{esc(what)} "
                    + button_form(
                        f"trust/{server}/approve",
                        f"Approve all of {server}",
                        visitor,
                        fields={"seal": _seal(changes)},
                    )
                    + "</p>"
                )
            for change in changes:
                kind = pins.KIND_OF[change.list_name]
                body.append(
                    f'<div class="change" data-item="{esc(change.name)}">'
                    f"<h3>{esc(kind)} <code>{esc(change.name)}</code> "
                    f'<span class="warning">{esc(change.status)}</span> '
                    + button_form(
                        f"trust/{server}/approve",
                        "Approve",
                        visitor,
                        fields={"list": change.list_name, "item": change.name, "seal": _seal([change])},
                    )
                    + f"</h3>{_diff_html(change.diff())}</div>"
                )
            if findings:
                rows = [
                    [esc(f.kind), esc(f.name), esc(f.field), esc(f.rule), esc(f.detail[:300])]
                    for f in findings
                ]
                body.append(
                    "<h3>Poisoning findings</h3>" + table(["kind", "item", "field", "rule", "detail"], rows)
                )
            body.append("</section>")
        head = f'<p class="note">Lock file: {esc(lock_file)} · mode: {esc(console.registry.gateway.mode)}</p>'
        if not any_pending:
            head += "<p>Every served definition matches its pin.</p>"
        content = head + "".join(body)
    except GatewayError as exc:  # a damaged lock file
        content, problem = "", str(exc)
    return render("Trust", content, active="trust", visitor=visitor, flash=flash, problem=problem)


def _approve(console: Console, server: str, form: dict[str, str]) -> str:
    lists = _lists(console, server)
    if lists is None:
        raise RegistryError(f"server {server!r} has not served its lists here; nothing to approve")
    lock_file = _lock_file(console)
    lock = pins.read_lock(lock_file) or {}
    list_name, item = form.get("list"), form.get("item")
    selected = {list_name: [item]} if list_name in pins.PINNED_LISTS and item else None
    current = pins.changes(server, lock.get(server), pins.snapshot(lists))
    shown = [c for c in current if selected is None or (c.list_name, c.name) == (list_name, item)]
    if _seal(shown) != form.get("seal"):
        raise RegistryError(
            f"{server} changed its definitions since this page showed them; review them again"
        )
    findings = poisoning.scan_lists(server, lists, max_length=console.registry.security.max_description)
    result = review.review(
        server, lock.get(server), lists, findings=findings, action="approve", selected=selected
    )
    if result.pins is None:
        return f"{server}: nothing to approve"
    lock[server] = result.pins
    pins.write_lock(lock_file, lock)
    accepted = ", ".join(f"{pins.KIND_OF[c.list_name]} {c.name}" for c in result.changes) or "its definitions"
    return f"approved {server}: {accepted}; wrote {lock_file}"


async def act(console: Console, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
    server = request.path_params["name"]
    details = {"list": form.get("list"), "item": form.get("item")}
    try:
        done = await anyio.to_thread.run_sync(_approve, console, server, form)
    except GatewayError as exc:
        await console.record(
            "approve",
            principal=visitor.principal,
            server=server,
            outcome=Outcome.ERROR,
            error=str(exc),
            details=details,
        )
        return await page(console, request, visitor, problem=str(exc))
    await console.record(
        "approve", principal=visitor.principal, server=server, name=form.get("item"), details=details
    )
    return await page(console, request, visitor, flash=done)
