"""The `mcpgw` command: a thin layer over config, registry, gateway and server.

Owns: arguments, output (rich tables on a terminal, `--json` for scripts), and
the one place a `GatewayError` becomes a message on stderr plus its exit code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mcpgw import config as config_mod
from mcpgw.audit import Outcome, printable
from mcpgw.config import Registry, ServerConfig, StdioServer, server_config
from mcpgw.config import edit as registry_mod
from mcpgw.errors import ConfigError, GatewayError, RegistryError

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Registry file (default: ${config_mod.ENV_CONFIG}, else ./servers.toml, "
        "else the shipped default).",
    )(func)


def _load(config_path: Path | None) -> tuple[Registry, Path | None]:
    return config_mod.load(config_path)


def _edit_path(config_path: Path | None) -> Path:
    return config_path or config_mod.default_path()


class _GatewayFailure(click.ClickException):
    """A `GatewayError` as the CLI shows it: one line on stderr and the error's own exit code."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        err.print(f"[red]mcpgw: error:[/] {escape(self.message)}")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            raise _GatewayFailure(exc) from exc
        except BaseExceptionGroup as group:
            # An error raised inside the serving task groups arrives wrapped.
            matched: BaseException | None = group.split(GatewayError)[0]
            while isinstance(matched, BaseExceptionGroup):
                matched = matched.exceptions[0]
            if isinstance(matched, GatewayError):
                raise _GatewayFailure(matched) from group
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcpgw-gateway", prog_name="mcpgw")
def cli() -> None:
    """mcpgw: one governed MCP server in front of many."""


# --- serve ---------------------------------------------------------------------------------------


@cli.command()
@config_option
@click.option("--transport", "-t", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default=None, help="HTTP address (default: [gateway].host, 127.0.0.1).")
@click.option(
    "--port", type=int, default=None, help="HTTP port (default: [gateway].port, 8765; 0 picks one)."
)
@click.option("--persona", "-p", default=None, help="stdio: serve this persona (HTTP: /personas/NAME/mcp).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def serve(
    config_path: Path | None,
    transport: str,
    host: str | None,
    port: int | None,
    persona: str | None,
    log_level: str,
) -> None:
    """Serve the merged catalog over stdio (for Claude Desktop, IDEs) or streamable HTTP."""
    from mcpgw.server.http import serve_http
    from mcpgw.server.lifecycle import stderr_logging
    from mcpgw.server.stdio import serve_stdio

    stderr_logging(getattr(logging, log_level.upper()))
    registry, path = _load(config_path)
    source = str(path) if path else "the shipped default registry"
    if persona is not None and transport == "http":
        raise RegistryError(
            "--persona applies to stdio; over HTTP each persona has its own /personas/NAME/mcp"
        )
    if transport == "http" and registry.gateway.mode == "production":
        from mcpgw.server import auth

        # Refuse an unsafe exposure before anything else is loaded or logged.
        auth.check_exposure(registry, host=host or registry.gateway.host)
    from mcpgw.assembly import build_gateway
    from mcpgw.catalog.personas import resolve

    resolve(registry, persona)
    built = build_gateway(registry, registry_path=path)
    gateway, audit_log = built.gateway, built.audit

    async def ready(url: str) -> None:
        await gateway.wait_started()
        err.print(f"[bold green]mcpgw[/] serving {source} at [bold]{url}[/]")
        for name in registry.personas:
            err.print(f"  persona [bold]{name}[/]: {url.removesuffix('/mcp')}/personas/{name}/mcp")
        if registry.auth is not None:
            metadata = f"{registry.auth.public_url.rstrip('/')}/.well-known/oauth-protected-resource/mcp"
            err.print(f"auth: bearer tokens from {registry.auth.issuer} (metadata: {metadata})")
        else:
            err.print("auth: none (no \\[auth] section: any client that reaches the port may call)")
        _print_servers(gateway, err)
        _print_tools(gateway, err)
        if audit_log is not None:
            err.print(f"audit log: {audit_log.path} (see `mcpgw logs`)")
        err.print("Press Ctrl+C to stop.")

    try:
        if transport == "stdio":
            logging.getLogger("mcpgw").info("serving %s over stdio", source)
            anyio.run(serve_stdio, gateway, persona, backend_options=_loop_options())
        else:
            anyio.run(
                lambda: serve_http(
                    gateway,
                    host=host or registry.gateway.host,
                    port=registry.gateway.port if port is None else port,
                    on_ready=ready,
                ),
                backend_options=_loop_options(),
            )
    finally:
        if audit_log is not None:
            audit_log.close()


def _loop_options() -> dict[str, Any]:
    """uvloop where it is installed: the serving loop's per-message overhead is most of a call's cost."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


# --- catalog views -------------------------------------------------------------------------------


async def _started_gateway(
    registry: Registry, body: Callable[[Any, Any], None], registry_path: Path | None
) -> None:
    """Start the gateway, filtered by the same pin/poisoning policy as `serve`; `body(gateway, trust)`."""
    from mcpgw.assembly import build_gateway

    built = build_gateway(registry, registry_path=registry_path, purpose="listing")
    async with built.gateway.running():
        await built.gateway.wait_started()
        body(built.gateway, built.trust)


def _print_withheld(items: list[Any], console: Console) -> None:
    """What the pin/poisoning policy keeps from clients (see `mcpgw.pins`), and why."""
    _print_items(items, console, title="withheld: {n} (clients do not see these; see `mcpgw pin --diff`)")


def _print_warned(items: list[Any], console: Console) -> None:
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


def _withheld_json(items: list[Any]) -> list[dict[str, str]]:
    return [{"kind": i.kind, "name": i.name, "server": i.server, "reason": i.reason} for i in items]


@cli.command()
@config_option
@click.option("--persona", "-p", default=None, help="Show what this persona sees.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tools(config_path: Path | None, persona: str | None, as_json: bool) -> None:
    """Start every server and print the merged tool catalog (or a persona's view of it)."""
    registry, path = _load(config_path)

    def show(gateway: Any, trust: Any) -> None:
        warnings = gateway.check_personas()
        view = gateway.view(persona)
        withheld = trust.withheld_from(gateway, persona)
        warned = trust.warned_to(gateway, persona)
        if as_json:
            problems = [str(p) for p in gateway.catalog.problems] + warnings
            data = {
                "tools": view.listed_tools,
                "problems": problems,
                "withheld": _withheld_json(withheld),
                "warned": _withheld_json(warned),
            }
            out.print_json(data=data)
        else:
            reasons = {item.name: item.reason for item in warned if item.kind == "tool"}
            # Keyed by the name the persona sees (an override may rename a tool).
            tool_warnings = {n: reasons[e.target] for n, e in view.entries.items() if e.target in reasons}
            _print_tools(gateway, out, tools=view.listed_tools, warned=tool_warnings)
            _print_warned([item for item in warned if item.kind != "tool"], out)
            _print_withheld(withheld, out)
            for warning in warnings:
                out.print(f"[yellow]warning:[/] {escape(warning)}")

    _quiet_logs()
    anyio.run(_started_gateway, registry, show, path)


@cli.command("personas")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def personas(config_path: Path | None, as_json: bool) -> None:
    """Start every server and list the personas with what each one sees."""
    registry, path = _load(config_path)

    def show(gateway: Any, trust: Any) -> None:
        warnings = gateway.check_personas()
        rows: list[dict[str, Any]] = []
        for name, persona in registry.personas.items():
            view = gateway.view(name)
            withheld = trust.withheld_from(gateway, name)
            rows.append(
                {
                    "persona": name,
                    "catalog": persona.catalog,
                    "read_only": persona.read_only,
                    "servers": persona.servers or sorted(gateway.upstreams),
                    "tools": len(view.tools),
                    "resources": len(view.resources),
                    "resource_templates": len(view.resource_templates),
                    "prompts": len(view.prompts),
                    "overrides": len(persona.tools),
                    "description": persona.description,
                    "withheld": _withheld_json(withheld),
                    "warned": _withheld_json(trust.warned_to(gateway, name)),
                }
            )
        if as_json:
            out.print_json(data={"personas": rows, "warnings": warnings})
            return
        held = f", {len(trust.withheld_items)} items withheld" if trust.withheld_items else ""
        if trust.warned_items:
            held += f", {len(trust.warned_items)} items served with warnings"
        table = Table(title=f"personas ({len(gateway.catalog.tools)} tools in the full catalog{held})")
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
        _print_warned(trust.warned_items, out)
        _print_withheld(trust.withheld_items, out)
        for warning in warnings:
            out.print(f"[yellow]warning:[/] {escape(warning)}")

    _quiet_logs()
    anyio.run(_started_gateway, registry, show, path)


@cli.command()
@config_option
@click.option("--persona", help="Only this persona.")
@click.option("--server", help="Only this upstream server.")
@click.option("--tool", help="Only this tool, resource or prompt (as the client named it).")
@click.option(
    "--outcome",
    # The values, not the names: click matches an Enum's members by name.
    type=click.Choice([outcome.value for outcome in Outcome]),
    help="Only rows with this outcome.",
)
@click.option("--principal", help="Only rows whose principal (token subject and client) contains TEXT.")
@click.option("--since", help="ISO time (UTC), e.g. 2026-11-25T10:00.")
@click.option("--until", help="ISO time (UTC).")
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--prune", type=float, metavar="DAYS", help="Delete rows older than DAYS, then exit.")
def logs(
    config_path: Path | None,
    persona: str | None,
    server: str | None,
    tool: str | None,
    outcome: str | None,
    principal: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
    prune: float | None,
) -> None:
    """The audit log, newest first."""
    import time

    from mcpgw import audit

    registry, _ = _load(config_path)
    db = audit.open_for_reading(audit.path_for(registry.audit))
    if prune is not None:
        removed = audit.prune(db, prune)
        err.print(f"pruned {removed} rows older than {prune:g} days")
        return
    filters: dict[str, Any] = {
        "persona": persona,
        "server": server,
        "tool": tool,
        "outcome": outcome,
        "principal": principal,
    }
    rows = audit.query(db, since=since, until=until, limit=limit, **filters)
    _print_log_rows(list(reversed(rows)) if follow else rows, as_json)
    if not follow:
        return
    last = max((r["id"] for r in rows), default=0)
    try:
        while True:
            time.sleep(0.5)
            new = audit.query(db, after_id=last, limit=1000, newest_first=False, **filters)
            if new:
                _print_log_rows(new, as_json)
                last = new[-1]["id"]
    except KeyboardInterrupt:
        return


def _print_log_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    rows = [printable(row) for row in rows]
    if as_json:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False), highlight=False, soft_wrap=True)
        return
    table = Table()
    # Who made the request is shown when the gateway knew (HTTP with [auth]); else the column is noise.
    principals = any(row.get("principal") for row in rows)
    columns = ["time", "kind", "persona", "server", "name", "outcome", "ms", "client", "error"]
    if principals:
        columns.insert(3, "principal")
    for column in columns:
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "denied": "yellow", "cancelled": "dim"}
    for row in rows:
        outcome = f"[{colours.get(row['outcome'], 'red')}]{row['outcome']}[/]"
        latency = "" if row["latency_ms"] is None else f"{row['latency_ms']:.1f}"
        cells = [
            str(row["ts"])[:23].replace("T", " "),
            row["kind"],
            row["persona"] or "",
            row["server"] or "",
            escape(row["name"] or ""),
            outcome,
            latency,
            escape(row["client"] or ""),
            escape(row["error"] or ""),
        ]
        if principals:
            cells.insert(3, escape(row.get("principal") or ""))
        table.add_row(*cells)
    out.print(table)


@cli.command()
@config_option
@click.option("--since", help="ISO time (UTC).")
@click.option(
    "--by",
    "groups",
    multiple=True,
    type=click.Choice(["persona", "server", "tool", "principal"]),
    help="Only these groupings (repeatable). Default: all; per principal when any row has one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(config_path: Path | None, since: str | None, groups: tuple[str, ...], as_json: bool) -> None:
    """Calls, errors, p50/p95 ms per persona, server, tool, principal; sampling spend per persona, route."""
    from mcpgw import audit

    registry, _ = _load(config_path)
    db = audit.open_for_reading(audit.path_for(registry.audit))
    data = audit.stats(db, since=since)
    from mcpgw.audit import spend as sampling_spend

    spend = sampling_spend.summary(db, since=since)
    keys = {"persona": "persona", "server": "server", "tool": "name", "principal": "principal"}
    chosen = [keys[g] for g in groups or keys]
    if as_json:
        out.print_json(data={**{key: data[key] for key in chosen}, "sampling": spend})
        return
    if not groups and all(row["key"] == "-" for row in data["principal"]):
        chosen.remove("principal")  # no row has a principal (stdio, or HTTP without [auth]): no table
    titles = {
        "persona": "per persona",
        "server": "per server",
        "name": "per tool",
        "principal": "per principal",
    }
    for group in chosen:
        column = group if group != "name" else "tool"
        rows = [
            (row["key"], row["calls"], row["errors"], row["p50_ms"] or "-", row["p95_ms"] or "-")
            for row in data[group]
        ]
        out.print(_table(titles[group], (column, "calls", "errors", "p50 ms", "p95 ms"), rows))
    for group, title in (("persona", "sampling per persona"), ("route", "sampling per route")):
        if not spend[group] or groups:  # --by narrows the report to those call groupings
            continue
        rows = [
            (row["key"], row["requests"], row["errors"], row["tokens"], f"{row['cost_usd']:.6f}")
            for row in spend[group]
        ]
        out.print(_table(title, (group, "requests", "errors", "tokens", "cost USD"), rows))


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
    """A titled rich table; the first cell of each row is a key from the log, shown literally."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for key, *cells in rows:
        table.add_row(escape(str(key)), *(str(cell) for cell in cells))
    return table


@cli.command("list-servers")
@config_option
@click.option("--check", is_flag=True, help="Connect to each enabled server and show its status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_servers(config_path: Path | None, check: bool, as_json: bool) -> None:
    """List the servers in the registry."""
    registry, path = _load(config_path)
    if not check:
        rows = [
            {
                "name": name,
                "kind": s.kind,
                "target": _target(s),
                "enabled": s.enabled,
                "namespace": config_mod.namespace_of(name, s),
            }
            for name, s in registry.servers.items()
        ]
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

    def show(gateway: Any, trust: Any) -> None:
        if as_json:
            out.print_json(
                data={
                    "servers": _status_rows(
                        gateway, registry, withheld=trust.withheld_items, warned=trust.warned_items
                    ),
                    "problems": [str(p) for p in gateway.catalog.problems],
                    "withheld": _withheld_json(trust.withheld_items),
                    "warned": _withheld_json(trust.warned_items),
                }
            )
        else:
            _print_servers(
                gateway, out, registry=registry, withheld=trust.withheld_items, warned=trust.warned_items
            )
            _print_problems(gateway, out)
            _print_warned(trust.warned_items, out)
            _print_withheld(trust.withheld_items, out)

    _quiet_logs()
    anyio.run(_started_gateway, registry, show, path)


def _target(server: ServerConfig) -> str:
    if isinstance(server, StdioServer):
        return " ".join([server.command, *server.args])
    return server.url


def _status_rows(
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


def _print_servers(
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
    for row in _status_rows(gateway, registry or gateway.registry, withheld=withheld, warned=warned):
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


def _print_tools(
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
    _print_problems(gateway, console)


def _print_problems(gateway: Any, console: Console) -> None:
    for problem in gateway.catalog.problems:
        console.print(f"[yellow]warning:[/] {escape(str(problem))}")


def _quiet_logs() -> None:
    from mcpgw.server.lifecycle import stderr_logging

    stderr_logging(logging.ERROR)


# --- registry edits ------------------------------------------------------------------------------


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise RegistryError(f"{what} {value!r} must look like KEY=VALUE")
        result[key] = val
    return result


@cli.command("add-server", context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--url", help="Streamable HTTP (or with --sse, legacy SSE) endpoint.")
@click.option("--header", "headers", multiple=True, help="HTTP header KEY=VALUE (values may use ${VAR}).")
@click.option("--sse", is_flag=True, help="The URL is a legacy SSE endpoint.")
@click.option(
    "--env", "env", multiple=True, help="Environment KEY=VALUE for a command (values may use ${VAR})."
)
@click.option("--cwd", help="Working directory for a command.")
@click.option("--namespace", help="Prefix of exposed names (default: NAME; '' for none).")
@click.option("--timeout", type=float, help="Seconds per call.")
@click.option("--no-check", is_flag=True, help="Do not connect to the server before adding it.")
def add_server(
    config_path: Path | None,
    name: str,
    command: tuple[str, ...],
    url: str | None,
    headers: tuple[str, ...],
    sse: bool,
    env: tuple[str, ...],
    cwd: str | None,
    namespace: str | None,
    timeout: float | None,
    no_check: bool,
) -> None:
    """Add a server: `add-server NAME -- COMMAND ARGS...` or `add-server NAME --url URL`."""
    fields: dict[str, Any] = {}
    if command and url:
        raise RegistryError("give either a command (after --) or --url, not both")
    if command:
        fields.update(command=command[0], args=list(command[1:]))
        if env:
            fields["env"] = _pairs(env, "--env")
        if cwd:
            fields["cwd"] = cwd
    elif url:
        fields["url"] = url
        if headers:
            fields["headers"] = _pairs(headers, "--header")
        if sse:
            fields["transport"] = "sse"
    else:
        raise RegistryError("give a command (add-server NAME -- COMMAND ARGS...) or --url URL")
    if namespace is not None:
        fields["namespace"] = namespace
    if timeout is not None:
        fields["timeout"] = timeout
    try:
        server = server_config(fields, key=f"servers.{name}")
    except ConfigError as exc:  # names the key as the file would: servers.NAME.url
        raise RegistryError(str(exc)) from None
    path = _edit_path(config_path)
    if not no_check:
        # The registry being edited gives its limits and secrets file; a new file has the defaults.
        registry = config_mod.load(path)[0] if path.exists() else Registry()
        tools_seen = anyio.run(_check_server, name, server, registry)
        err.print(f"checked {name}: {tools_seen} tools")
    registry_mod.add_server(path, name, server)
    err.print(f"added [bold]{name}[/] to {path}")


async def _check_server(name: str, server: ServerConfig, registry: Registry) -> int:
    from mcpgw.upstream import credentials, for_server

    secrets = credentials.load_secrets(registry.gateway)
    upstream = for_server(name, server, registry, secrets=secrets, restart=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(upstream.run)
        await upstream.wait_settled()
        count = len(upstream.lists["tools"])
        state, error = upstream.state, upstream.error
        _warn_findings(name, upstream.lists)
        upstream.stop()
    if state != "ready":
        raise RegistryError(f"server {name!r} did not start: {error} (use --no-check to add it anyway)")
    return count


def _warn_findings(name: str, lists: Any, max_length: int = 2000) -> None:
    from mcpgw.security.poisoning import scan_lists

    for finding in scan_lists(name, lists, max_length=max_length):
        err.print(f"[yellow]warning: possible tool poisoning:[/] {escape(str(finding))}")


# --- pinned definitions --------------------------------------------------------------------------


@cli.command()
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
    registry, path = _load(config_path)
    if server is not None and server not in registry.servers:
        raise RegistryError(f"no server named {server!r} (known: {', '.join(registry.servers) or 'none'})")
    if server is not None and not registry.servers[server].enabled:
        raise RegistryError(f"server {server!r} is disabled; enable it to pin it")
    names = [server] if server is not None else list(registry.enabled_servers())
    lock_file = pins.lock_path(registry, path)
    lock = pins.read_lock(lock_file) or {}
    _quiet_logs()
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
    from mcpgw.upstream import credentials, for_server

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


@cli.command("remove-server")
@config_option
@click.argument("name")
def remove_server(config_path: Path | None, name: str) -> None:
    """Remove a server from the registry."""
    path = _edit_path(config_path)
    registry_mod.remove_server(path, name)
    err.print(f"removed {name} from {path}")


@cli.command()
@config_option
@click.argument("name")
def enable(config_path: Path | None, name: str) -> None:
    """Enable a server."""
    registry_mod.set_enabled(_edit_path(config_path), name, True)
    err.print(f"enabled {name}")


@cli.command()
@config_option
@click.argument("name")
def disable(config_path: Path | None, name: str) -> None:
    """Disable a server (kept in the file, not started)."""
    registry_mod.set_enabled(_edit_path(config_path), name, False)
    err.print(f"disabled {name}")


# --- Claude Desktop ------------------------------------------------------------------------------


@cli.group()
def install() -> None:
    """Put mcpgw into a client's configuration."""


@install.command("claude-desktop")
@config_option
@click.option(
    "--write",
    "write_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Merge the entry into this Claude Desktop config file.",
)
@click.option("--name", default="mcpgw", show_default=True, help="Entry name in mcpServers.")
@click.option("--persona", "-p", default=None, help="The persona the entry serves.")
def install_claude_desktop(
    config_path: Path | None, write_file: Path | None, name: str, persona: str | None
) -> None:
    """Print (or merge with --write) the Claude Desktop entry that starts mcpgw."""
    path = config_path or (config_mod.default_path() if config_mod.default_path().exists() else None)
    if persona is not None:
        registry, _ = _load(path)
        if persona not in registry.personas:
            raise RegistryError(
                f"unknown persona {persona!r} (known: {', '.join(registry.personas) or 'none'})"
            )
    entry = registry_mod.claude_desktop_entry(
        path, name=name, extra_args=["--persona", persona] if persona else None
    )
    if write_file is None:
        out.print_json(data={"mcpServers": entry})
        return
    registry_mod.merge_into_claude_desktop(write_file, entry)
    err.print(f"wrote the {name!r} entry into {write_file}")


@cli.group("import")
def import_() -> None:
    """Import servers from another client's configuration."""


@import_.command("claude-desktop")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def import_claude_desktop(config_path: Path | None, file: Path) -> None:
    """Turn the mcpServers block of a Claude Desktop config FILE into registry entries."""
    path = _edit_path(config_path)
    added, skipped = registry_mod.import_claude_desktop(path, file)
    for name in added:
        err.print(f"added {name}")
    for reason in skipped:
        err.print(f"skipped {reason}")
    err.print(f"{len(added)} added, {len(skipped)} skipped, in {path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point; errors are shown once, by `_GatewayFailure`, with their exit code."""
    cli.main(args=argv, prog_name="mcpgw")


if __name__ == "__main__":
    main()
