"""The Servers page: each upstream's state and numbers, and the actions on servers.

Owns: the table of servers (registry entry, state, era, protocol version, tool/resource/prompt
counts, restarts and call latency over the last day from the audit log, the last error), and
the actions: enable and disable (an edit of the registry file, which the serving gateway's
live reload applies), restart (the serving gateway's own upstream; not offered by
`mcpgw admin`, whose upstreams no client uses), and adding a server from a form with the same
checks as `mcpgw add-server` (name and namespace free, the server starts, poisoning findings
shown) before anything is written.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from mcpgw.audit import Outcome
from mcpgw.audit.store import connection
from mcpgw.config import edit as registry_edit
from mcpgw.config import namespace_of, server_config
from mcpgw.core.status import target
from mcpgw.errors import ConfigError, GatewayError, RegistryError
from mcpgw.observe.logs import counted
from mcpgw.server.console.access import Visitor
from mcpgw.server.console.context import Console
from mcpgw.server.console.layout import button_form, csrf_field, esc, render, table, url, visible

DAY = timedelta(days=1)


def _since() -> str:
    return (datetime.now(UTC) - DAY).isoformat()


def _numbers(db: Any, since: str) -> dict[str, dict[str, Any]]:
    """Per server, over the last day: restarts, calls, errors, p50 and p95 latency (ms), last error."""
    reader = connection(db)
    out: dict[str, dict[str, Any]] = {}
    for row in reader.select(
        "select server, count(*) as restarts from events "
        "where kind = 'upstream' and name = 'restarting' and ts >= ? group by server",
        [since],
    ):
        out.setdefault(row["server"], {})["restarts"] = row["restarts"]
    latencies: dict[str, list[float]] = {}
    for row in reader.select(
        "select server, latency_ms, outcome from events "
        "where kind = 'call' and ts >= ? and server is not null",
        [since],
    ):
        latencies.setdefault(row["server"], []).append(float(row["latency_ms"] or 0))
        seen = out.setdefault(row["server"], {})
        seen["calls"] = seen.get("calls", 0) + 1
        seen["errors"] = seen.get("errors", 0) + (row["outcome"] != "ok")
    for server, values in latencies.items():
        values.sort()
        out[server]["p50"] = values[len(values) // 2]
        out[server]["p95"] = values[min(len(values) - 1, int(len(values) * 0.95))]
    # Each server's newest error row by id (the order rows are written in): no bare column beside an
    # aggregate, which only SQLite allows.
    for row in reader.select(
        "select server, error, ts from events where id in (select max(id) from events "
        "where kind = 'upstream' and outcome = 'error' group by server)"
    ):
        out.setdefault(row["server"], {})["last_error"] = (row["error"], row["ts"])
    return out


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


async def page(
    console: Console,
    request: Request,
    visitor: Visitor,
    *,
    flash: str | None = None,
    problem: str | None = None,
) -> Response:
    none: dict[str, dict[str, Any]] = {}
    numbers, unread = await console.read(lambda db: _numbers(db, _since()), none)
    gateway = console.gateway
    rows = []
    for name, server in gateway.registry.servers.items():
        upstream = gateway.upstreams.get(name)
        seen = numbers.get(name, {})
        state = upstream.state if upstream is not None else "disabled"
        lists = upstream.lists if upstream is not None else None
        error = upstream.error if upstream is not None else None
        if error is None and "last_error" in seen:
            text, ts = seen["last_error"]
            error = f"{text} (at {ts[:19]})" if text else None
        actions = [
            button_form(f"servers/{name}/disable", "Disable", visitor)
            if server.enabled
            else button_form(f"servers/{name}/enable", "Enable", visitor)
        ]
        if console.live and upstream is not None:
            actions.append(button_form(f"servers/{name}/restart", "Restart", visitor))
        rows.append(
            [
                f"<strong>{esc(name)}</strong><br>"
                f"<span class=note>{esc(server.kind)}: {esc(target(server)[:120])}</span>",
                f'<span class="{esc(state)}" data-state="{esc(state)}">{esc(state)}</span>',
                esc(upstream.era if upstream is not None and upstream.protocol_version else ""),
                esc(upstream.protocol_version if upstream is not None else ""),
                esc(namespace_of(name, server)),
                esc(len(lists["tools"]) if lists is not None else ""),
                esc(len(lists["resources"]) if lists is not None else ""),
                esc(len(lists["prompts"]) if lists is not None else ""),
                esc(seen.get("restarts", 0)),
                esc(f"{seen.get('calls', 0)} / {seen.get('errors', 0)}"),
                esc(f"{_ms(seen.get('p50'))} / {_ms(seen.get('p95'))}" if "p50" in seen else ""),
                f'<span class="error">{visible((error or "")[:300])}</span>',
                " ".join(actions),
            ]
        )
    headers = [
        "server", "state", "era", "protocol", "namespace", "tools", "resources", "prompts",
        "restarts (24h)", "calls / errors (24h)", "p50 / p95 ms", "last error", "",
    ]  # fmt: skip
    body = table(headers, rows, numeric=(5, 6, 7, 8), id="servers")
    if not console.live:
        body += (
            '<p class="note">Served by <code>mcpgw admin</code>: states are of this console\'s own '
            "connections to the servers; enable and disable edit the registry, which the gateway's live "
            "reload applies. Restart the gateway's client to restart its servers.</p>"
        )
    body += _add_form(visitor)
    problem = "; ".join(text for text in (problem, unread) if text) or None
    return render("Servers", body, active="servers", visitor=visitor, flash=flash, problem=problem)


def _add_form(visitor: Visitor) -> str:
    return f"""<h2>Add a server</h2><form class="card" method="post" action="{url("servers/add")}">
{csrf_field(visitor)}
<label>Name <input type="text" name="name" required pattern="[A-Za-z0-9_-]{{1,48}}"></label>
<label>Command <input type="text" name="command"
 placeholder="npx -y @modelcontextprotocol/server-memory"></label>
<label>or URL <input type="text" name="url" placeholder="https://example.com/mcp"></label>
<label><input type="checkbox" name="sse" value="1"> legacy SSE</label><br>
<label>Namespace <input type="text" name="namespace" placeholder="(the name)"></label>
<label>Env / headers (KEY=VALUE, one a line) <textarea name="pairs" rows="2" cols="40"></textarea></label>
<label>Era <select name="era"><option value="">auto</option>
<option>handshake</option><option>stateless</option></select></label>
<label><input type="checkbox" name="no_check" value="1"> add without starting it first</label>
<button type="submit">Add server</button></form>"""


async def set_enabled(console: Console, name: str, enabled: bool, visitor: Visitor) -> str:
    path = console.editable()
    await anyio.to_thread.run_sync(registry_edit.set_enabled, path, name, enabled)
    await console.record("enable" if enabled else "disable", principal=visitor.principal, server=name)
    return (
        f"{'enabled' if enabled else 'disabled'} {name} in {path}; the gateway applies it on its next reload"
    )


async def restart(console: Console, name: str, visitor: Visitor) -> str:
    upstream = console.gateway.upstreams.get(name)
    if not console.live or upstream is None:
        raise RegistryError(f"server {name!r} is not running here; nothing to restart")
    if not upstream.restart(f"restarted from the admin console by {visitor.principal}"):
        raise RegistryError(f"server {name!r} is {upstream.state}; restart it once it is ready or failed")
    await console.record("restart", principal=visitor.principal, server=name)
    return f"restarting {name}"


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.strip().partition("=")
        if not sep or not key:
            raise RegistryError(f"{line.strip()[:80]!r} must look like KEY=VALUE")
        pairs[key] = value
    return pairs


async def add(console: Console, form: dict[str, str], visitor: Visitor) -> str:
    """`mcpgw add-server` from the form: the same checks, in the same order, before anything is written."""
    from mcpgw.security import review

    name = form.get("name", "").strip()
    command, address = form.get("command", "").strip(), form.get("url", "").strip()
    if bool(command) == bool(address):
        raise RegistryError("give either a command or a URL")
    fields: dict[str, Any] = {}
    pairs = _pairs(form.get("pairs", ""))
    if command:
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise RegistryError(f"the command does not parse: {exc}") from None
        fields.update(command=words[0], args=words[1:])
        if pairs:
            fields["env"] = pairs
    else:
        fields["url"] = address
        if pairs:
            fields["headers"] = pairs
        if form.get("sse"):
            fields["transport"] = "sse"
    namespace = form.get("namespace", "").strip()
    if namespace:
        fields["namespace"] = namespace
    if form.get("era"):
        fields["era"] = form["era"]
    try:
        server = server_config(fields, key=f"servers.{name}")
    except ConfigError as exc:
        raise RegistryError(str(exc)) from None
    path = console.editable()
    given = bool(namespace)
    await anyio.to_thread.run_sync(
        lambda: registry_edit.check_new_server(path, name, server, namespace_given=given)
    )
    note = ""
    if not form.get("no_check"):
        check = await review.check_server(path, name, server)
        if check.error is not None:
            raise check.error
        findings = "; ".join(str(f) for f in check.findings)
        note = f": {counted(check.tools, 'tool')}" + (f"; poisoning checks: {findings}" if findings else "")
    await anyio.to_thread.run_sync(
        lambda: registry_edit.add_server(path, name, server, namespace_given=given)
    )
    await console.record(
        "add-server", principal=visitor.principal, server=name, details={"entry": server.entry()}
    )
    return f"added {name} to {path}{note}"


async def act(console: Console, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
    """Run the action the path names and show the page with what it did (or why it did not)."""
    name, action = request.path_params.get("name", ""), request.path_params.get("action", "add")
    try:
        if action == "add" and not name:
            done = await add(console, form, visitor)
        elif name not in console.registry.servers:
            raise RegistryError(f"no server named {name!r}")
        elif action in ("enable", "disable"):
            done = await set_enabled(console, name, action == "enable", visitor)
        elif action == "restart":
            done = await restart(console, name, visitor)
        else:
            return Response(status_code=404)
    except GatewayError as exc:
        await console.record(
            "add-server" if action == "add" else action,
            principal=visitor.principal,
            server=name or form.get("name"),
            outcome=Outcome.ERROR,
            error=str(exc),
        )
        return await page(console, request, visitor, problem=str(exc))
    return await page(console, request, visitor, flash=done)
