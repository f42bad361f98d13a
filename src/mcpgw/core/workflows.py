"""Workflow tools, run: each step a tool call through the one forward pipeline, as the caller.

Owns: the target of a workflow tool's call (`target`, which `kinds.CallTool.resolve` returns once
the persona's view has the workflow, so the call passes the guard stages like any other), and
running it (`run`):

1. the input: defaults filled in, then checked against the workflow's input schema;
2. every step checked against the caller's view before any runs: a step the persona cannot call
   (hidden, unknown, withheld by the pin policy) refuses the whole call, and nothing reaches an
   upstream; a workflow never grants what the persona lacks;
3. the steps in order, each through `Gateway.call_tool` under the caller's persona, data rules,
   flow policies and client channel, each its own audit row whose `parent` is the workflow call's
   request id; progress to the caller before each (`step 2 (label) of 3: ns__tool`), when asked;
4. the first step that fails (a tool error, a refusal, an upstream error, an expression pointing at
   nothing) stops the workflow: its tool error names the step;
5. the answer: `output` with its expressions filled in, else the last step's result as it came.

A step's `result`, as expressions read it: the tool result's `structuredContent` when present,
else the JSON value of its one text content (the text itself when that is not JSON), else its
text contents joined by newlines (null when it has none).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mcpgw import audit
from mcpgw.catalog import personas as personas_mod
from mcpgw.catalog.personas import ToolEntry, View
from mcpgw.config import expressions
from mcpgw.config.workflows import PREFIX, WorkflowConfig, step_label
from mcpgw.core.pipeline import Request, Target
from mcpgw.errors import GatewayError, NotFound, WorkflowError
from mcpgw.observe import context as observe

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway

logger = logging.getLogger("mcpgw.workflows")


def target(view: View, entry: ToolEntry, arguments: dict[str, Any] | None) -> Target:
    """The workflow call as the pipeline runs it: guarded like any tool call, served by `run`."""
    params: dict[str, Any] = {"name": entry.target}
    sent = view.arguments(entry, arguments)  # a persona's fixed and narrowed arguments apply here too
    if sent is not None:
        params["arguments"] = sent
    return Target(
        persona=view.persona,
        rule_name=entry.target,
        method="tools/call",
        params=params,
        upward=("arguments",),
        local=run,
    )


async def run(gateway: Gateway, request: Request, target: Target) -> dict[str, Any]:
    exposed = str(target.params["name"])
    workflow = gateway.registry.workflows.get(exposed.removeprefix(PREFIX))
    if workflow is None:  # a reload removed it between resolve and now
        raise NotFound(f"Unknown tool: {exposed}")
    try:
        given = _input(exposed, workflow, target.params.get("arguments"))
        await gateway.wait_started()
        calls = _plan(gateway.view(request.persona), exposed, workflow)
        return await _steps(gateway, request, exposed, workflow, given, calls)
    except WorkflowError as exc:
        logger.info("%s", exc)
        return {"content": [{"type": "text", "text": str(exc)}], "isError": True}


def _input(exposed: str, workflow: WorkflowConfig, arguments: Any) -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    given = {**workflow.defaults(), **(arguments or {})}
    error = best_match(Draft202012Validator(workflow.input_schema()).iter_errors(given))
    if error is not None:
        where = f"input {'.'.join(map(str, error.path))!r}" if error.path else "input"
        raise WorkflowError(f"{exposed}: {where}: {error.message}; no step ran")
    return given


def _plan(view: View, exposed: str, workflow: WorkflowConfig) -> list[str]:
    """The name this persona calls each step's tool by; any step it cannot call refuses the whole call."""
    by_target = {entry.target: name for name, entry in view.entries.items() if entry.workflow is None}
    names = []
    for i, step in enumerate(workflow.steps):
        name = by_target.get(step.call)
        if name is None:
            audit.note(outcome=audit.Outcome.DENIED)
            who = f"persona {view.persona!r}" if view.persona is not None else "this gateway"
            raise WorkflowError(
                f"{exposed}: refused before any step ran: {step_label(workflow, i)} calls {step.call}, "
                f"which {who} cannot call"
            )
        names.append(name)
    return names


async def _steps(
    gateway: Gateway,
    request: Request,
    exposed: str,
    workflow: WorkflowConfig,
    given: dict[str, Any],
    calls: list[str],
) -> dict[str, Any]:
    results: list[Any] = []
    names: dict[str, int] = {}
    last: dict[str, Any] = {}
    total = len(workflow.steps)
    for i, step in enumerate(workflow.steps):
        label = step_label(workflow, i)
        scope = expressions.Scope(given, results, names, declared=frozenset(workflow.input))
        try:
            arguments = expressions.fill(step.args, scope)
        except WorkflowError as exc:
            raise WorkflowError(f"{exposed} stopped at {label}, before calling {step.call}: {exc}") from exc
        if request.on_progress is not None:
            await request.on_progress(i, total, f"{label} of {total}: {step.call}")
        try:
            last = await _call(gateway, request, calls[i], arguments)
        except GatewayError as exc:
            # An upstream's error reply, a timeout, a data rule's block: the step's own row has it too.
            raise WorkflowError(f"{exposed} stopped at {label} ({step.call}): {exc}") from exc
        if last.get("isError") is True:
            raise WorkflowError(
                f"{exposed} stopped at {label} ({step.call}): {_texts(last) or 'a tool error'}"
            )
        if last.get("resultType", "complete") != "complete":
            raise WorkflowError(
                f"{exposed} stopped at {label} ({step.call}): the tool asked for client input, "
                "which a workflow step cannot pass on"
            )
        results.append(result_value(last))
        if step.name is not None:
            names[step.name] = i
    if request.on_progress is not None:
        await request.on_progress(total, total, f"{total} of {total} steps done")
    if workflow.output is None:
        return {key: value for key, value in last.items() if key != "resultType"}
    scope = expressions.Scope(given, results, names, declared=frozenset(workflow.input))
    try:
        output = expressions.fill(workflow.output, scope, top=False)
    except WorkflowError as exc:
        raise WorkflowError(f"{exposed}: every step ran, but its output could not be made: {exc}") from exc
    return _answer(output)


async def _call(gateway: Gateway, request: Request, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One step, as a tool call of the caller's own: through the pipeline, as its own audit row."""
    parent = audit.current()
    step = audit.Step(
        kind=audit.Kind.CALL,
        method="tools/call",
        persona=parent.persona if parent is not None else None,
        client=parent.client if parent is not None else None,
        protocol=parent.protocol if parent is not None else None,
        principal=parent.principal if parent is not None else None,
        session=parent.session if parent is not None else None,
        parent=parent.request_id if parent is not None else None,
        name=name,
        arguments=arguments,
    )
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    client = request.client
    if client is not None and client.modern:
        # A 2026-07-28 client answers questions by retrying its call with the answers: it would retry
        # the workflow, not this step. So a step's upstream is not told this client can answer
        # (mcpgw's own sampling policy still can); a handshake-era client is asked on its channel.
        client = replace(client, can_sample=False, can_elicit=False)
    if gateway.view(request.persona).search:  # a search-mode persona calls its tools through the wrapper
        params = {"name": personas_mod.CALL_TOOL, "arguments": params}
    # Fields of its own: the step's log lines and routing must not relabel the workflow call's.
    with observe.serving(request_id=step.request_id, persona=step.persona) as fields:
        try:
            with audit.recording(step, into=gateway.audit):
                result = await gateway.call_tool(
                    params,
                    persona=request.persona,
                    on_log=request.on_log,
                    client=client,
                    session=request.session,
                )
                if result.get("isError") is True:
                    if step.outcome is audit.Outcome.OK:  # a flow policy's refusal says `blocked`
                        step.outcome = audit.Outcome.ERROR
                    step.error = _texts(result)
                if step.result is None:
                    step.result = result.get("structuredContent") or _texts(result)
                return result
        finally:
            if gateway.metrics is not None:  # counted like a client's call: the upstream served one
                gateway.metrics.request(
                    method="tools/call",
                    persona=step.persona,
                    server=fields.server,
                    tool=fields.tool,
                    outcome=step.outcome.value,
                    seconds=time.perf_counter() - step.started,
                    upstream_seconds=fields.upstream_seconds,
                )


def result_value(result: dict[str, Any]) -> Any:
    """What `steps[N].result` reads (see the module docstring)."""
    if result.get("structuredContent") is not None:
        return result["structuredContent"]
    texts = [
        str(c.get("text"))
        for c in result.get("content") or []
        if isinstance(c, dict) and c.get("type") == "text"
    ]
    if len(texts) == 1:
        try:
            return json.loads(texts[0])
        except ValueError:
            return texts[0]
    return "\n".join(texts) if texts else None


def _answer(output: Any) -> dict[str, Any]:
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    answer: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if isinstance(output, dict):
        answer["structuredContent"] = output
    return answer


def _texts(result: dict[str, Any]) -> str | None:
    texts = [
        str(c.get("text"))
        for c in result.get("content") or []
        if isinstance(c, dict) and c.get("type") == "text"
    ]
    return "\n".join(texts)[:2000] if texts else None
