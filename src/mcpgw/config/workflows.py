"""`[workflows.NAME]`: tools defined in the registry whose steps call other catalog tools.

Owns: the models of a workflow and its steps, the name a workflow is exposed under
(`workflows__NAME`), and every check the registry alone can make: input schemas that are JSON
Schema, step names, expressions that parse (`config.expressions`) and read only declared inputs
and earlier steps, and calls that could name a catalog tool. Each error names the workflow (the
key) and the step. Listing a workflow belongs to `catalog.personas`, running one to
`core.workflows`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, JsonValue, field_validator, model_validator

from mcpgw.config import expressions
from mcpgw.config.base import SEPARATOR, TOOL_NAME_RE, Strict
from mcpgw.config.servers import ServerConfig, namespace_of

NAMESPACE = "workflows"
"""Workflow tools are listed as `workflows__NAME`; no server may take this namespace beside them."""
PREFIX = NAMESPACE + SEPARATOR
WORKFLOW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,52}$")
"""53 characters at most: `workflows__` and the name stay within a tool name's 64."""
STEP_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
"""What `{{ steps.NAME.result }}` can name."""


def exposed_name(name: str) -> str:
    return PREFIX + name


class WorkflowStep(Strict):
    """One step: a catalog tool, called with `args` (strings may hold `{{ ... }}` expressions)."""

    call: str
    """The tool's name in the catalog (`<namespace>__<name>`), whatever a persona renames it to."""
    args: dict[str, JsonValue] = Field(default_factory=dict)
    name: str | None = None
    """What later steps and the output call it by (`steps.NAME`), and progress and errors name."""

    @field_validator("call")
    @classmethod
    def _a_tool_name(cls, call: str) -> str:
        if not TOOL_NAME_RE.match(call):
            raise ValueError(f"{call!r} is not a tool name (letters, digits, '_' or '-', 64 at most)")
        if call.startswith(PREFIX):
            raise ValueError(f"{call!r} is a workflow: a workflow's steps call tools, not workflows")
        return call

    @field_validator("name")
    @classmethod
    def _a_step_name(cls, name: str | None) -> str | None:
        if name is not None and not STEP_NAME_RE.match(name):
            raise ValueError(
                f"step name {name!r} must start with a letter or '_', then letters, digits, '_', '-'"
            )
        return name


class WorkflowConfig(Strict):
    """`[workflows.NAME]`: a tool whose steps call other tools, later steps reading earlier results."""

    description: str | None = None
    input: dict[str, dict[str, JsonValue]] = Field(default_factory=dict)
    """The input's JSON Schema `properties`: one schema per argument."""
    required: list[str] | None = None
    """The arguments a caller must give; default: every input without a `default`."""
    steps: list[WorkflowStep] = Field(min_length=1)
    output: JsonValue = None
    """What the workflow answers (expressions filled in); default: the last step's result as it came."""

    @model_validator(mode="after")
    def _consistent(self) -> WorkflowConfig:
        _check_inputs(self)
        names: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            label = step_label(self, i)
            if step.name is not None:
                if step.name in names:
                    raise ValueError(
                        f"{label}: the name {step.name!r} is already step {names[step.name] + 1}'s"
                    )
                names[step.name] = i
            _check_expressions(self, step.args, names, i, where=f"{label}: args")
        if self.output is not None:
            _check_expressions(self, self.output, names, len(self.steps), where="output")
        return self

    @property
    def required_inputs(self) -> list[str]:
        if self.required is not None:
            return list(self.required)
        return [key for key, schema in self.input.items() if "default" not in schema]

    def input_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "properties": {k: dict(v) for k, v in self.input.items()}}
        if self.required_inputs:
            schema["required"] = self.required_inputs
        return schema

    def defaults(self) -> dict[str, Any]:
        return {key: schema["default"] for key, schema in self.input.items() if "default" in schema}


def step_label(workflow: WorkflowConfig, index: int) -> str:
    """How errors and progress name a step: `step 2 (label)`, counting from 1 as people do."""
    name = workflow.steps[index].name
    return f"step {index + 1}" + (f" ({name})" if name else "")


def _check_inputs(workflow: WorkflowConfig) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    for key, schema in workflow.input.items():
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"input {key!r} is not a JSON Schema: {exc.message}") from None
    for key in workflow.required or []:
        if key not in workflow.input:
            raise ValueError(f"required names {key!r}, which is not an input")


def _check_expressions(
    workflow: WorkflowConfig, value: Any, names: Mapping[str, int], before: int, *, where: str
) -> None:
    """Every expression in `value` parses, reads only declared inputs (the schema clients see) and only
    steps before `before`."""
    for at, template in _templates(value, where):
        for path in template.paths:
            step = path.step
            if path.root == "input" and path.segments[0] not in workflow.input:
                known = ", ".join(workflow.input) or "none: declare them in `input`"
                raise ValueError(f"{at}: {path}: {path.segments[0]!r} is not an input (inputs: {known})")
            if isinstance(step, str) and step not in names:
                raise ValueError(f"{at}: {path}: no earlier step is named {step!r}")
            if isinstance(step, int) and not 0 <= step < before:
                raise ValueError(f"{at}: {path}: steps[{step}] is not an earlier step (steps count from 0)")


def _templates(value: Any, where: str) -> list[tuple[str, expressions.Template]]:
    found = []
    for at, text in _strings(value, ""):
        path = f"{where}{at}" if at.startswith("[") else f"{where}.{at}" if at else where
        try:
            found.append((path, expressions.parse(text)))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return found


def _strings(value: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in _strings(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{where}[{i}]")]
    return []


def check_registry(workflows: Mapping[str, WorkflowConfig], servers: Mapping[str, ServerConfig]) -> None:
    """The checks that need the whole registry: names, the namespace, and that each step's call names
    a server's namespace (any server's, enabled or not: disabling one must not break the file)."""
    if not workflows:
        return
    namespaces = {namespace_of(name, server) for name, server in servers.items()}
    if any(namespace_of(n, s) == NAMESPACE for n, s in servers.items() if s.enabled):
        raise ValueError(f"a server uses the namespace {NAMESPACE!r}, which workflow tools are listed under")
    for name, workflow in workflows.items():
        if not WORKFLOW_NAME_RE.match(name):
            raise ValueError(
                f"workflow name {name!r} must be letters, digits, '-' or '_' (53 at most, to stay "
                f"within 64 as {exposed_name('NAME')})"
            )
        if "" in namespaces:
            continue  # a server without a namespace may offer any name
        for i, step in enumerate(workflow.steps):
            namespace = step.call.split(SEPARATOR, 1)[0] if SEPARATOR in step.call else None
            if namespace not in namespaces:
                raise ValueError(
                    f"workflow {name!r} {step_label(workflow, i)} calls {step.call!r}, but no server has "
                    f"the namespace {namespace or step.call!r}"
                )
