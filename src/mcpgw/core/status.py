"""What the gateway reports about itself: its servers, their status, and what each persona sees.

Owns: the rows (plain dicts, in the shape `--json` prints them) behind `mcpgw
list-servers`, `tools` and `personas` and the server table `serve` shows at
start: each server as the registry describes it, each upstream's state in a
started gateway, each persona's view in numbers, and the items the pin and
poisoning policy withholds or serves with a warning (see `security.trust`), and each tool's
flow labels (see `security.flows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, get_args

from mcpgw.config import OpenApiServer, Registry, ServerConfig, StdioServer, namespace_of

if TYPE_CHECKING:
    from mcpgw.catalog.personas import View
    from mcpgw.core.gateway import Gateway
    from mcpgw.observe.metrics import Snapshot
    from mcpgw.security.trust import Trust, WithheldItem


def target(server: ServerConfig) -> str:
    """What a server runs or where it is: its command line, its URL, or its OpenAPI spec."""
    if isinstance(server, StdioServer):
        return " ".join([server.command, *server.args])
    if isinstance(server, OpenApiServer):
        return server.openapi
    return server.url


def registry_rows(registry: Registry) -> list[dict[str, Any]]:
    """Each server as the registry describes it, nothing started."""
    return [
        {
            "name": name,
            "kind": server.kind,
            "target": target(server),
            "enabled": server.enabled,
            "namespace": namespace_of(name, server),
        }
        for name, server in registry.servers.items()
    ]


def server_rows(
    gateway: Gateway,
    *,
    withheld: list[WithheldItem] | None = None,
    warned: list[WithheldItem] | None = None,
) -> list[dict[str, Any]]:
    """Each server of the gateway's registry with its upstream's state (`disabled`: not started).

    `withheld` and `warned` add a count per server of those items.
    """
    rows = []
    for name, server in gateway.registry.servers.items():
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


def item_rows(items: Iterable[WithheldItem]) -> list[dict[str, str]]:
    """Withheld (or warned-about) items as rows."""
    return [{"kind": i.kind, "name": i.name, "server": i.server, "reason": i.reason} for i in items]


def persona_rows(gateway: Gateway, trust: Trust) -> list[dict[str, Any]]:
    """Each persona of the registry: its settings and what its view holds, withholds and warns about."""
    rows: list[dict[str, Any]] = []
    for name, persona in gateway.registry.personas.items():
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
                "withheld": item_rows(withheld),
                "warned": item_rows(trust.warned_to(gateway, name)),
            }
        )
    return rows


def tool_warnings(view: View, warned: Iterable[WithheldItem]) -> dict[str, str]:
    """Tool name as the persona sees it -> why it is served with a warning (an override may rename it)."""
    reasons = {item.name: item.reason for item in warned if item.kind == "tool"}
    return {name: reasons[entry.target] for name, entry in view.entries.items() if entry.target in reasons}


def tool_labels(gateway: Gateway, view: View) -> dict[str, list[str]]:
    """Tool name as the persona sees it -> its flow labels (`security.flows`), for the labelled ones."""
    from mcpgw.security.flows import labels_of

    labelled: dict[str, list[str]] = {}
    for name, entry in view.entries.items():
        route = gateway.catalog.tool_routes.get(entry.target)
        if route is not None:
            labels = labels_of(route.upstream.config, route.name, route.definition)
            if labels:
                labelled[name] = sorted(labels)
    return labelled


def metrics_snapshot(gateway: Gateway) -> Snapshot:
    """The gateway's state as a metrics scrape reads it."""
    from mcpgw.observe.metrics import Snapshot, UpstreamSample  # loaded once metrics are on
    from mcpgw.upstream.supervisor import State

    samples = [
        UpstreamSample(u.name, u.state, *u.slots, tools=len(u.lists["tools"]))
        for u in list(gateway.upstreams.values())
    ]
    log = gateway.audit
    return Snapshot(
        samples,
        states=get_args(State),
        in_flight=gateway.in_flight,
        audit_queued=log.queued if log is not None else None,
        audit_dropped=log.dropped if log is not None else 0,
        audit_written=log.written if log is not None else 0,
    )
