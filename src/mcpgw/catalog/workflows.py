"""Workflow tools as the catalog lists them (`[workflows.NAME]` as `workflows__NAME`).

Owns: a workflow's listed definition (its description, its input schema, and annotations derived
from its steps' tools as the current catalog serves them: read-only only when every step is), and
the warnings about a persona that lists a workflow one of whose steps it cannot call. Which
personas list a workflow is decided by their rules like any tool's (`catalog.personas`); the
definition comes from the registry, so it is not pinned, but its steps' tools are, like any tool.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mcpgw.catalog import Catalog
from mcpgw.config import Registry
from mcpgw.config.workflows import WorkflowConfig, exposed_name, step_label


def listed(registry: Registry | None, catalog: Catalog) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each workflow's registry name and its tool definition, in the registry's order."""
    if registry is None or not registry.workflows:
        return
    tools = {tool["name"]: tool for tool in catalog.tools}
    for name, workflow in registry.workflows.items():
        if exposed_name(name) not in tools:  # else a server without a namespace has the name (`problems`)
            yield name, definition(name, workflow, tools)


def definition(name: str, workflow: WorkflowConfig, tools: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    calls = [step.call for step in workflow.steps]
    description = workflow.description or f"A workflow: calls {', '.join(calls)}, in that order."
    return {
        "name": exposed_name(name),
        "description": description,
        "inputSchema": workflow.input_schema(),
        "annotations": hints_of([tools.get(call) for call in calls]),
    }


def hints_of(steps: list[Mapping[str, Any] | None]) -> dict[str, bool]:
    """What the steps' tools say, combined as MCP's defaults read them: read-only only if every step's
    tool says so; destructive and open-world if any step's tool is (a tool not known counts as both)."""
    hints = [dict((tool or {}).get("annotations") or {}) for tool in steps]
    known = all(tool is not None for tool in steps)
    read_only = known and all(h.get("readOnlyHint") is True for h in hints)
    out = {
        "readOnlyHint": read_only,
        "openWorldHint": not known or any(h.get("openWorldHint") is not False for h in hints),
    }
    if not read_only:
        out["destructiveHint"] = not known or any(
            h.get("readOnlyHint") is not True and h.get("destructiveHint") is not False for h in hints
        )
    return out


def problems(registry: Registry, catalog: Catalog) -> list[str]:
    """A workflow whose name a server's tool has (through an alias or `namespace = ""`): the tool keeps
    it. Steps that call a tool the catalog does not offer now (a typo, a tool withheld, a server that
    never started): calls of their workflow are refused until it does."""
    taken = [
        f"workflow {exposed_name(name)!r} is not listed: a server's tool has that name (give the server a "
        "namespace, or the workflow another name)"
        for name in registry.workflows
        if exposed_name(name) in catalog.tool_routes
    ]
    return taken + [
        f"workflow {exposed_name(name)!r} {step_label(workflow, i)} calls {step.call!r}, which the catalog "
        "does not offer now (unknown, withheld, or its server never started): its calls will be refused"
        for name, workflow in registry.workflows.items()
        for i, step in enumerate(workflow.steps)
        if step.call not in catalog.tool_routes
    ]


def step_warnings(persona: str, registry: Registry, reachable: set[str]) -> list[str]:
    """A persona lists a workflow (`reachable`: the catalog names it lists) with a step it cannot call:
    the workflow's calls will be refused before any step runs."""
    warnings = []
    for name, workflow in registry.workflows.items():
        if exposed_name(name) not in reachable:
            continue
        for i, step in enumerate(workflow.steps):
            if step.call not in reachable:
                warnings.append(
                    f"persona {persona!r}: workflow {exposed_name(name)!r} {step_label(workflow, i)} calls "
                    f"{step.call!r}, which this persona cannot call (hidden or unknown): "
                    "its calls will be refused"
                )
    return warnings
