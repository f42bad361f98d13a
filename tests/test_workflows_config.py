"""`[workflows.NAME]` in the registry: every bad definition stops the file with the workflow, the step
and the reason; and the expression language on its own (what a path reads, keeps and refuses)."""

from __future__ import annotations

from typing import Any

import pytest

from mcpgw.config import expressions, parse
from mcpgw.config.expressions import Scope
from mcpgw.errors import ConfigError, WorkflowError

SERVERS = '[servers.github]\ncommand = "x"\n[servers.time]\ncommand = "y"\nnamespace = "clock"\n'
GOOD = """
[workflows.triage_issue]
description = "Fetch an issue, summarise it, and label it."
input = { issue = { type = "integer" }, note = { type = "string", default = "" } }
steps = [
  { call = "github__get_issue", name = "issue", args = { number = "{{ input.issue }}" } },
  {call="github__add_labels", args={number="{{ input.issue }}", labels="{{ steps.issue.result.labels }}"}},
]
output = "{{ steps[1].result }}"
"""


def load(text: str) -> Any:
    return parse(SERVERS + text, source="servers.toml")


def test_a_workflow_loads_with_its_input_schema() -> None:
    workflow = load(GOOD).workflows["triage_issue"]
    assert workflow.input_schema() == {
        "type": "object",
        "properties": {"issue": {"type": "integer"}, "note": {"type": "string", "default": ""}},
        "required": ["issue"],  # default: every input without a default
    }
    assert [step.call for step in workflow.steps] == ["github__get_issue", "github__add_labels"]


def workflow(steps: str, extra: str = "", name: str = "w") -> str:
    return f"[workflows.{name}]\n{extra}\nsteps = [{steps}]\n"


BAD = {
    "unknown key in a step": (
        workflow('{ call = "github__a", bogus = 1 }'),
        "workflows.w.steps.0.bogus",
        "unknown key",
    ),
    "no steps": (workflow(""), "workflows.w.steps", "at least 1 item"),
    "no call": (workflow("{ args = {} }"), "workflows.w.steps.0.call", "required key is missing"),
    "a later step's result": (
        workflow('{ call = "github__a", args = { n = "{{ steps[1].result }}" } }, { call = "github__b" }'),
        "workflows.w",
        "step 1: args.n: {{ steps[1].result }}: steps[1] is not an earlier step (steps count from 0)",
    ),
    "an unknown step name": (
        workflow('{ call = "github__a", args = { n = "{{ steps.nope.result }}" } }'),
        "workflows.w",
        "step 1: args.n: {{ steps.nope.result }}: no earlier step is named 'nope'",
    ),
    "an input not declared": (
        workflow(
            '{ call = "github__a", name = "one", args = { n = "{{ input.b }}" } }', "input = { a = {} }"
        ),
        "workflows.w",
        "step 1 (one): args.n: {{ input.b }}: 'b' is not an input (inputs: a)",
    ),
    "an input when none is declared": (
        workflow('{ call = "github__a", args = { n = "{{ input.a }}" } }'),
        "workflows.w",
        "step 1: args.n: {{ input.a }}: 'a' is not an input (inputs: none: declare them in `input`)",
    ),
    "a filter": (
        workflow('{ call = "github__a", args = { n = "{{ input.a | upper }}" } }', "input = { a = {} }"),
        "workflows.w",
        "cannot read '| upper': only .name, [number] and [\"key\"] may follow (no calls, operators or "
        "filters)",
    ),
    "a call": (
        workflow('{ call = "github__a", args = { n = "{{ input.a.pop() }}" } }'),
        "workflows.w",
        "cannot read '()'",
    ),
    "an unknown root": (
        workflow('{ call = "github__a", args = { n = "{{ os.environ }}" } }'),
        "workflows.w",
        "{{ os.environ }}: unknown name 'os' (an expression starts with input or steps)",
    ),
    "an unclosed expression": (
        workflow('{ call = "github__a", args = { n = ["x", "{{ input.a"] } }'),
        "workflows.w",
        "step 1: args.n[1]: '{{ input.a': '{{' is not closed by '}}'",
    ),
    "an empty expression": (
        workflow('{ call = "github__a", args = { n = "{{ }}" } }'),
        "workflows.w",
        "{{ }} is empty",
    ),
    "a step without its result": (
        workflow('{ call = "github__a" }, { call = "github__b", args = { n = "{{ steps[0].content }}" } }'),
        "workflows.w",
        "name a step and its result: steps[0].result or steps.NAME.result",
    ),
    "an output reading a step that is not there": (
        workflow('{ call = "github__a" }', 'output = "{{ steps[1].result }}"'),
        "workflows.w",
        "output: {{ steps[1].result }}: steps[1] is not an earlier step",
    ),
    "an output list reading a later step": (
        workflow('{ call = "github__a" }', 'output = ["{{ steps[0].result }}", "{{ steps[1].result }}"]'),
        "workflows.w",
        "output[1]: {{ steps[1].result }}: steps[1] is not an earlier step",
    ),
    "an input that is no JSON Schema": (
        workflow('{ call = "github__a" }', 'input = { a = { type = "nonsense" } }'),
        "workflows.w",
        "input 'a' is not a JSON Schema",
    ),
    "required naming no input": (
        workflow('{ call = "github__a" }', 'input = { a = {} }\nrequired = ["b"]'),
        "workflows.w",
        "required names 'b', which is not an input",
    ),
    "two steps of one name": (
        workflow('{ call = "github__a", name = "x" }, { call = "github__b", name = "x" }'),
        "workflows.w",
        "step 2 (x): the name 'x' is already step 1's",
    ),
    "a bad step name": (
        workflow('{ call = "github__a", name = "1st" }'),
        "workflows.w.steps.0.name",
        "step name '1st' must start with a letter",
    ),
    "a step calling a workflow": (
        workflow('{ call = "workflows__other" }'),
        "workflows.w.steps.0.call",
        "'workflows__other' is a workflow: a workflow's steps call tools, not workflows",
    ),
    "a call that is no tool name": (
        workflow('{ call = "github.get issue" }'),
        "workflows.w.steps.0.call",
        "is not a tool name",
    ),
    "a call no server's namespace has": (
        workflow('{ call = "gitlab__get_issue" }, { call = "time__now" }'),
        "workflows",
        "workflow 'w' step 1 calls 'gitlab__get_issue', but no server has the namespace 'gitlab'",
    ),
    "a name too long for a tool": (
        workflow('{ call = "github__a" }', name="w" * 54),
        "workflows",
        "53 at most, to stay within 64 as workflows__NAME",
    ),
    "a server in the workflows namespace": (
        '[servers.flows]\ncommand = "z"\nnamespace = "workflows"\n' + workflow('{ call = "github__a" }'),
        "workflows",
        "a server uses the namespace 'workflows', which workflow tools are listed under",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_workflow_stops_the_registry_naming_it(case: str) -> None:
    text, key, reason = BAD[case]
    with pytest.raises(ConfigError) as error:
        load(text)
    assert error.value.key == key
    assert reason in error.value.reason
    assert str(error.value).startswith(f"servers.toml: {key}: ")


def test_a_disabled_server_still_lends_its_namespace() -> None:
    """Disabling a server must not make the file stop loading: its workflows are refused at run time."""
    text = '[servers.crm]\ncommand = "z"\nenabled = false\n' + workflow('{ call = "crm__find" }')
    assert list(load(text).workflows) == ["w"]


# --- the expression language ----------------------------------------------------------------------

SCOPE = Scope(
    input={"issue": 7, "tags": ["a", "b"], "who": {"name": "Ann"}},
    results=[{"labels": ["bug", "p1"], "odd key": {"x": None}, "count": 2, "short": ["one"]}, "plain text"],
    names={"fetch": 0},
    declared=frozenset({"issue", "tags", "who", "maybe"}),
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{{ input.issue }}", 7),
        ("{{input.tags}}", ["a", "b"]),
        ("{{ input.tags[-1] }}", "b"),
        ("{{ steps[0].result.labels[1] }}", "p1"),
        ("{{ steps.fetch.result['odd key'] }}", {"x": None}),
        ('{{ steps.fetch.result["odd key"].x }}', None),
        ("{{ steps[1].result }}", "plain text"),
        ("#{{ input.issue }}: {{ input.who }}", '#7: {"name": "Ann"}'),
        (
            "{{ steps[0].result.labels }} / {{ steps[1].result }} / {{ input.who.name }}",
            '["bug", "p1"] / plain text / Ann',
        ),
        ("no expression", "no expression"),
    ],
)
def test_a_whole_expression_keeps_its_json_type_and_one_in_text_is_text(text: str, value: Any) -> None:
    assert expressions.render(expressions.parse(text), SCOPE) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{{ steps[0].result.title }}",
            "steps[0].result has no field 'title' (its fields: count, labels, odd key, short)",
        ),
        ("{{ steps[0].result.labels[5] }}", "steps[0].result.labels has 2 items: [5] is out of range"),
        ("{{ input.tags[0][1] }}", "input.tags[0] is a string, not a list: it has no [1]"),
        ("{{ steps[0].result.short[1] }}", "steps[0].result.short has 1 item: [1] is out of range"),
        ("{{ steps[0].result.count[0] }}", "steps[0].result.count is a number, not a list: it has no [0]"),
        (
            "{{ steps[1].result.upper }}",
            "steps[1].result is a string, not an object: it has no field 'upper'",
        ),
        ("{{ input.who.__class__ }}", "input.who has no field '__class__' (its fields: name)"),
        ("{{ steps[2].result }}", "steps[2] has not run (only earlier steps can be read)"),
        ("{{ input.maybe }}", "input 'maybe' was not given"),
    ],
)
def test_a_path_to_nothing_is_an_error_naming_the_expression_and_the_missing_part(
    text: str, message: str
) -> None:
    with pytest.raises(WorkflowError) as error:
        expressions.render(expressions.parse(text), SCOPE)
    assert str(error.value) == f"{text}: {message}"


def test_an_optional_input_not_given_leaves_out_only_the_argument_that_is_exactly_it() -> None:
    args = {"number": "{{ input.issue }}", "note": "{{ input.maybe }}", "labels": ["{{ input.tags[0] }}"]}
    assert expressions.fill(args, SCOPE) == {"number": 7, "labels": ["a"]}
    with pytest.raises(WorkflowError, match="input 'maybe' was not given"):
        expressions.fill({"text": "note: {{ input.maybe }}"}, SCOPE)
