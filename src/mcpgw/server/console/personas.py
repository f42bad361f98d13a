"""The Personas page: each persona's catalog as its clients see it, and what it does not see.

Owns: per persona (or the whole catalog, when no persona is configured), the tools as listed to
its clients (names, descriptions and parameters after its overrides; fixed arguments hidden),
its resources, templates and prompts, the items withheld from it or served with a warning by
the pin and poisoning policy with the reason (`security.trust`), the view's own warnings (rules
that match nothing), and its rules in words (`catalog.explain`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mcpgw.catalog.explain import explain
from mcpgw.core.status import tool_labels
from mcpgw.observe.logs import counted
from mcpgw.server.console.access import Visitor
from mcpgw.server.console.context import Console
from mcpgw.server.console.layout import esc, render, table, visible


def _params(tool: dict[str, Any]) -> str:
    schema = tool.get("inputSchema") or {}
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    return ", ".join(f"{name}{'' if name in required else '?'}" for name in props)


def _persona(console: Console, name: str | None) -> str:
    gateway = console.gateway
    view = gateway.view(name)
    trust = gateway.trust
    withheld = trust.withheld_from(gateway, name) if trust is not None else []
    warned = trust.warned_to(gateway, name) if trust is not None else []
    labels = tool_labels(gateway, view)
    title = name or "(no persona: the whole catalog)"
    anchor = esc(name or "all")
    parts = [f'<section class="card" id="persona-{anchor}"><h2>{esc(title)}</h2>']
    config = gateway.registry.personas.get(name) if name else None
    if config is not None and config.description:
        parts.append(f"<p>{esc(config.description)}</p>")
    parts.append(
        f'<p class="note">{counted(len(view.tools), "tool")}, {counted(len(view.resources), "resource")}, '
        f"{counted(len(view.resource_templates), 'template')}, {counted(len(view.prompts), 'prompt')}"
        f"{' · search mode: clients list search_tools and call_tool' if view.search else ''}</p>"
    )
    rows = []
    for tool in view.tools:
        entry = view.entries.get(str(tool["name"]))
        renamed = entry is not None and entry.target != tool["name"]
        rows.append(
            [
                f"<code>{esc(tool['name'])}</code>"
                + (f"<br><span class=note>was {esc(entry.target)}</span>" if renamed and entry else ""),
                visible(str(tool.get("description") or "")[:300]),
                esc(_params(tool)),
                esc(", ".join(sorted(entry.fixed)) if entry is not None else ""),
                esc(", ".join(labels.get(str(tool["name"]), []))),
            ]
        )
    parts.append(table(["tool", "description", "parameters", "fixed (hidden)", "flow labels"], rows))
    others = [
        *(["resource", str(r.get("uri", "")), str(r.get("description") or "")] for r in view.resources),
        *(
            ["template", str(t.get("uriTemplate", "")), str(t.get("description") or "")]
            for t in view.resource_templates
        ),
        *(["prompt", str(p.get("name", "")), str(p.get("description") or "")] for p in view.prompts),
    ]
    if others:
        parts.append(
            table(["kind", "name", "description"], ([esc(k), esc(n), visible(d)] for k, n, d in others))
        )
    held = [
        ['<span class="withheld">withheld</span>', esc(i.kind), esc(i.name), esc(i.server), esc(i.reason)]
        for i in withheld
    ]
    held += [
        ['<span class="warning">warned</span>', esc(i.kind), esc(i.name), esc(i.server), esc(i.reason)]
        for i in warned
    ]
    if held:
        parts.append("<h3>Withheld or served with a warning</h3>")
        parts.append(table(["", "kind", "name", "server", "why"], held))
    for warning in view.warnings:
        parts.append(f'<p class="warning">{esc(warning)}</p>')
    if name is not None:
        said = explain(gateway.registry, name)
        can = "".join(f"<li>{esc(line)}</li>" for line in said.can)
        cannot = "".join(f"<li>{esc(line)}</li>" for line in said.cannot)
        parts.append(f"<h3>Can</h3><ul>{can}</ul><h3>Cannot</h3><ul>{cannot}</ul>")
    parts.append("</section>")
    return "".join(parts)


async def page(console: Console, request: Request, visitor: Visitor) -> Response:
    names: list[str | None] = list(console.registry.personas) or [None]
    body = "".join(_persona(console, name) for name in names)
    return render("Personas", body, active="personas", visitor=visitor)
