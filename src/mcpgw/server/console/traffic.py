"""The Traffic page: the audit log as it is written, filtered, and one request in detail.

Owns: the filter form (persona, server, tool, kind, outcome, principal), the newest matching
rows, the live stream of new ones (server-sent events from `/admin/traffic/stream`: the audit
database is polled every `POLL` seconds for rows past the last one sent, which works as well
for `mcpgw admin` beside a stdio gateway as inside the serving one; a `problem` event says when
the log cannot be read, and polling goes on), and a request's detail:
every row with its request id (the call, and the sampling requests it caused), with the
arguments and result summary as stored, i.e. already redacted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mcpgw.audit import Connection, Outcome, printable, query
from mcpgw.observe.logs import counted
from mcpgw.server.console.access import Access, Refused, Visitor
from mcpgw.server.console.context import Console
from mcpgw.server.console.layout import esc, render, table, url

POLL = 0.2
"""Seconds between looks for new rows: with the writer's 50 ms batches, a row is on the page well
within a second of its request's end."""
RECHECK = 5.0
"""Seconds between checks that the stream's visitor may still look (a session ends, a token expires)."""
DETAIL = tuple(
    (label, column or label)
    for label, column in (
        ("time", "ts"), ("kind", ""), ("method", ""), ("persona", ""), ("principal", ""), ("session", ""),
        ("client", ""), ("protocol", ""), ("server", ""), ("name", ""), ("outcome", ""), ("error", ""),
        ("latency ms", "latency_ms"), ("findings", ""), ("input tokens", "input_tokens"),
        ("output tokens", "output_tokens"), ("cost USD", "cost_usd"),
    )
)  # fmt: skip
"""A request's detail: label, audit column."""
FILTERS = ("persona", "server", "tool", "kind", "outcome", "principal")
SHOWN = 100
Rows = list[dict[str, Any]]


def _filters(request: Request) -> dict[str, str]:
    return {key: value for key in FILTERS if (value := request.query_params.get(key, "").strip())}


def _query_args(filters: dict[str, str]) -> dict[str, Any]:
    args: dict[str, Any] = {k: v for k, v in filters.items() if k != "outcome"}
    if "outcome" in filters:
        try:
            args["outcome"] = Outcome(filters["outcome"])
        except ValueError:
            known = ", ".join(o.value for o in Outcome)
            raise ValueError(f"outcome {filters['outcome'][:40]!r} is not one of {known}") from None
    return args


def _wire(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the page's script gets it: cleaned for display, with its end as epoch milliseconds."""
    shown = printable(row)
    try:
        started = datetime.fromisoformat(str(row["ts"])).timestamp() * 1000
    except ValueError:
        started = 0.0
    keys = (
        "id",
        "ts",
        "kind",
        "method",
        "persona",
        "principal",
        "server",
        "name",
        "outcome",
        "request_id",
        "error",
    )
    out = {key: shown.get(key) for key in keys}
    out["time"] = str(row["ts"])[11:23]
    out["latency"] = f"{row['latency_ms']:.1f} ms" if row.get("latency_ms") is not None else ""
    out["ended_ms"] = round(started + float(row.get("latency_ms") or 0), 3)
    return out


def _cells(row: dict[str, Any]) -> list[str]:
    wire = _wire(row)
    link = (
        f'<a href="{esc(url("traffic/request/" + str(wire["request_id"])))}">'
        f"{esc(wire['name'] or wire['method'])}</a>"
        if wire["request_id"]
        else esc(wire["name"])
    )
    outcome = f'<span class="{esc(wire["outcome"])}">{esc(wire["outcome"])}</span>'
    plain = [esc(wire[key]) for key in ("time", "kind", "persona", "principal", "server")]
    return [*plain, link, outcome, esc(wire["latency"]), esc(str(wire["error"] or "")[:200])]


async def page(console: Console, request: Request, visitor: Visitor) -> Response:
    filters = _filters(request)
    problem = None
    try:
        args = _query_args(filters)
    except ValueError as exc:
        problem, args, filters = str(exc), {}, {}

    def newest(db: Connection) -> tuple[Rows, int]:
        rows = query(db, limit=SHOWN, **args)
        if rows:
            return rows, max(int(r["id"]) for r in rows)
        return rows, int(db.select("select coalesce(max(id), 0) as last from events")[0]["last"])

    none: tuple[Rows, int] = ([], 0)
    (rows, after), unread = await console.read(newest, none)
    problem = problem or unread
    inputs = "".join(
        f'<label>{esc(key)} <input type="text" name="{key}" value="{esc(filters.get(key, ""))}"></label>'
        for key in FILTERS
    )
    form = (
        f'<form class="card" method="get" action="{url("traffic")}">{inputs}'
        '<button type="submit">Filter</button></form>'
    )
    stream = url("traffic/stream") + "?" + urlencode({**filters, "after": after})
    headers = ["time (UTC)", "kind", "persona", "principal", "server", "name", "outcome", "latency", "error"]
    grid = table(headers, (_cells(r) for r in rows), id="traffic").replace(
        "<tbody>", f'<tbody data-stream="{esc(stream)}" data-detail="{esc(url("traffic/request/"))}">', 1
    )
    body = f'{form}<p>Stream: <span id="live" class="note">connecting</span></p>{grid}'
    script = f'<script src="{url("static/traffic.js")}"></script>'
    return render("Traffic", body, active="traffic", visitor=visitor, problem=problem, script=script)


async def stream(console: Console, access: Access, request: Request, visitor: Visitor) -> Response:
    try:
        args = _query_args(_filters(request))
        after = int(request.query_params.get("after", "0"))
    except ValueError as exc:
        return Response(str(exc), status_code=400)
    last_event = request.headers.get("last-event-id", "")
    if last_event.isdigit():  # a reconnecting EventSource resumes where it was
        after = int(last_event)

    async def events() -> AsyncIterator[str]:
        nonlocal after
        yield "retry: 1000\n\n"
        checked = anyio.current_time()
        said: str | None = None
        while True:

            def newer(db: Connection, after: int = after) -> Rows:
                return query(db, after_id=after, newest_first=False, limit=200, **args)

            empty: Rows = []
            rows, unread = await console.read(newer, empty)
            if unread != said:  # said once, not five times a second; "" once it reads again
                yield f"event: problem\ndata: {json.dumps(unread or '')}\n\n"
            said = unread
            for row in rows:
                after = int(row["id"])
                yield f"id: {after}\nevent: row\ndata: {json.dumps(_wire(row))}\n\n"
            if anyio.current_time() - checked > RECHECK:
                checked = anyio.current_time()
                try:
                    await access.visitor(request)
                except Refused:
                    return
                yield ": still here\n\n"
            await anyio.sleep(POLL)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def script() -> Response:
    text = resources.files("mcpgw.server.console").joinpath("traffic.js").read_text(encoding="utf-8")
    return Response(text, media_type="text/javascript", headers={"Cache-Control": "no-store"})


def _pretty(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


async def detail(console: Console, request: Request, visitor: Visitor) -> Response:
    request_id = request.path_params["request_id"]
    empty: Rows = []
    rows, problem = await console.read(
        lambda db: db.select("select * from events where request_id = ? order by id", [request_id]), empty
    )
    if problem is not None:
        return render("Request", "", active="traffic", visitor=visitor, problem=problem, status=503)
    if not rows:
        return render(
            "Request", "<p>No rows with that request id.</p>", active="traffic", visitor=visitor, status=404
        )
    parts = []
    for raw in rows:
        row = printable(raw)
        facts = [(label, row[column]) for label, column in DETAIL]
        listed = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts if v not in (None, "")
        )
        parts.append(
            f'<section class="card row-{esc(row["kind"])}">'
            f"<h2>{esc(row['kind'])}: {esc(row['name'] or row['method'])}</h2>"
            f"<table>{listed}</table>"
            "<h3>Arguments (as stored: redacted)</h3>"
            f"<pre class=arguments>{esc(_pretty(row['arguments']))}</pre>"
            f"<h3>Result summary</h3><pre class=result>{esc(_pretty(row['result']))}</pre></section>"
        )
    caused = len([r for r in rows if r["kind"] == "sampling"])
    head = (
        f'<p class="note">request {esc(request_id)}: {counted(len(rows), "row")}, '
        f"{counted(caused, 'sampling request')} it caused</p>"
    )
    return render("Request", head + "".join(parts), active="traffic", visitor=visitor)
