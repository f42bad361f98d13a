"""The console's HTML: the page shell, its navigation and style, and small escaping helpers.

Owns how every page looks: one stylesheet inline (no build step, no external fetch), the
navigation bar, tables and forms built from escaped values only (`esc`), and the CSRF field every
form carries. Pages hand it trusted markup built with these helpers and nothing else.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.responses import HTMLResponse

from mcpgw.security.poisoning import shown
from mcpgw.server.console.access import CSRF_FIELD, LOCAL, PREFIX, Visitor

PAGES = (
    ("servers", "Servers"),
    ("personas", "Personas"),
    ("traffic", "Traffic"),
    ("spend", "Spend"),
    ("trust", "Trust"),
)

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d232a;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#cfd8e3;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .who{margin-left:auto;font-size:12px;color:#9aa7b4}
main{padding:1em 1.2em}h1{font-size:20px;margin:.2em 0 .6em}h2{font-size:16px;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:1em}
th,td{border-bottom:1px solid #e3e7ec;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ready,.ok{color:#157347}.failed,.error,.denied,.blocked,.withheld,.timeout{color:#b02a37}
.warning,.restarting,.starting,.refused{color:#b26a00}.disabled,.stopped{color:#6c757d}
form.inline{display:inline}button{cursor:pointer}
pre{background:#fff;border:1px solid #e3e7ec;padding:.6em;overflow:auto}
.diff .add{color:#157347}.diff .del{color:#b02a37}
.card{background:#fff;border:1px solid #e3e7ec;padding:.8em;margin:.6em 0}
.note{color:#6c757d}.flash{background:#e7f1ff;border:1px solid #b6d4fe;padding:.5em .8em;margin-bottom:1em}
.problem{background:#f8d7da;border:1px solid #f1aeb5;padding:.5em .8em;margin-bottom:1em}
label{display:inline-block;margin:.2em .8em .2em 0}input[type=text],input[type=password]{min-width:14em}
"""


def esc(value: Any) -> str:
    """Any value as HTML text (None as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def visible(value: Any) -> str:
    """Text an upstream wrote (a description, an error) as HTML, its invisible characters shown as
    `\\u{XXXX}`: what a model would read is what a reviewer sees."""
    return esc(shown(str(value))) if value is not None else ""


def url(path: str) -> str:
    return f"{PREFIX}/{path.lstrip('/')}"


def csrf_field(visitor: Visitor) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{esc(visitor.csrf)}">'


def button_form(action: str, label: str, visitor: Visitor, *, fields: dict[str, str] | None = None) -> str:
    """A one-button POST form (every action is a POST with the CSRF field)."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (fields or {}).items()
    )
    return (
        f'<form class="inline" method="post" action="{esc(url(action))}">{csrf_field(visitor)}{hidden}'
        f'<button type="submit">{esc(label)}</button></form>'
    )


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Iterable[int] = (), id: str = ""
) -> str:
    """A table of cells that are already markup (escape values with `esc`)."""
    right = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in right else ''}>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f"<table{f' id={esc(id)}' if id else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def render(
    title: str,
    body: str,
    *,
    active: str,
    visitor: Visitor | None,
    flash: str | None = None,
    problem: str | None = None,
    status: int = 200,
    script: str = "",
) -> HTMLResponse:
    nav = "".join(
        f'<a href="{url(key)}" class="{"on" if key == active else ""}">{esc(label)}</a>'
        for key, label in PAGES
    )
    who = ""
    if visitor is not None:
        who = f'<span class="who">{esc(visitor.principal)}</span>'
        if visitor.principal != LOCAL:
            who += button_form("logout", "Log out", visitor)
    notes = (f'<div class="flash">{esc(flash)}</div>' if flash else "") + (
        f'<div class="problem">{esc(problem)}</div>' if problem else ""
    )
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · mcpgw</title>'
        f"<style>{STYLE}</style></head><body><header><strong>mcpgw</strong>{nav}{who}</header>"
        f"<main><h1>{esc(title)}</h1>{notes}{body}</main>{script}</body></html>"
    )
    # No page of the console may be framed (clickjacking) or cached by a shared cache.
    headers = {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
    }
    return HTMLResponse(page, status_code=status, headers=headers)
