"""The workflow expression language: `{{ input.issue }}`, `{{ steps[0].result.labels[1] }}`.

Owns: parsing a workflow's strings into `Template`s (checked when the registry loads, so a typo
stops the file with its key), and evaluating them against JSON values when a workflow runs.

The language is paths and nothing else: a root (`input`, or `steps` followed by a step's index or
name and `.result`), then `.name`, `[index]` (negative counts from the end) or `["key"]` segments
that step into JSON objects and lists. Nothing is executed; only the keys of JSON objects and the
items of JSON lists are read, never a Python attribute; there are no calls, operators or loops.
A string that is exactly one `{{ ... }}` keeps the JSON type of its value (a list stays a list); an
expression inside a longer string is rendered as text (strings as they are, anything else as JSON).

Why our own and not Jinja: even Jinja's sandbox evaluates arbitrary expressions (filters,
arithmetic, attribute lookups on Python objects) and renders everything to text; a workflow needs
only to point into earlier results, keep their JSON types, and say exactly which field is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mcpgw.errors import WorkflowError
from mcpgw.observe.logs import counted

ROOTS = ("input", "steps")
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_SEGMENT = re.compile(
    rf"\s*(?:\.\s*(?P<name>{_NAME})|\[\s*(?:(?P<index>-?[0-9]+)|\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)')\s*\])"
)
_ROOT = re.compile(rf"\s*(?P<root>{_NAME})")

Segment = str | int


@dataclass(frozen=True)
class Path:
    """One `{{ ... }}`: where its value comes from."""

    text: str
    """As written between the braces, trimmed: how errors name it."""
    root: str
    segments: tuple[Segment, ...]

    @property
    def step(self) -> Segment | None:
        """The step a `steps...` path reads (its index or name); None for `input`."""
        return self.segments[0] if self.root == "steps" and self.segments else None

    def __str__(self) -> str:
        return "{{ " + self.text + " }}"


@dataclass(frozen=True)
class Template:
    """A string of a workflow: plain text and expressions, in order."""

    parts: tuple[str | Path, ...]

    @property
    def whole(self) -> Path | None:
        """The expression, when the string is exactly one (its value keeps its JSON type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Path):
            return self.parts[0]
        return None

    @property
    def paths(self) -> list[Path]:
        return [part for part in self.parts if isinstance(part, Path)]


def parse_path(text: str) -> Path:
    """One expression (between the braces); `ValueError` says what is wrong with it."""
    trimmed = text.strip()
    if not trimmed:
        raise ValueError("{{ }} is empty: name a value, such as {{ input.NAME }}")
    match = _ROOT.match(text)
    if match is None:
        raise ValueError(f"{{{{ {trimmed} }}}}: an expression starts with input or steps")
    root, at = match["root"], match.end()
    if root not in ROOTS:
        raise ValueError(
            f"{{{{ {trimmed} }}}}: unknown name {root!r} (an expression starts with input or steps)"
        )
    segments: list[Segment] = []
    while at < len(text.rstrip()):
        segment = _SEGMENT.match(text, at)
        if segment is None:
            raise ValueError(
                f"{{{{ {trimmed} }}}}: cannot read {text[at:].strip()!r}: only .name, [number] and "
                '["key"] may follow (no calls, operators or filters)'
            )
        if segment["name"] is not None:
            segments.append(segment["name"])
        elif segment["index"] is not None:
            segments.append(int(segment["index"]))
        else:
            segments.append(segment["dq"] if segment["dq"] is not None else segment["sq"])
        at = segment.end()
    if root == "steps" and (len(segments) < 2 or segments[1] != "result"):
        raise ValueError(
            f"{{{{ {trimmed} }}}}: name a step and its result: steps[0].result or steps.NAME.result"
        )
    if root == "input" and not segments:
        raise ValueError(f"{{{{ {trimmed} }}}}: name an input: input.NAME")
    return Path(trimmed, root, tuple(segments))


@lru_cache(maxsize=4096)
def parse(text: str) -> Template:
    """A workflow string as a `Template`; `ValueError` for a bad expression or an unclosed `{{`."""
    parts: list[str | Path] = []
    at = 0
    for match in _EXPRESSION.finditer(text):
        if match.start() > at:
            parts.append(text[at : match.start()])
        parts.append(parse_path(match[1]))
        at = match.end()
    rest = text[at:]
    if "{{" in rest:
        raise ValueError(f"{rest.strip()!r}: '{{{{' is not closed by '}}}}'")
    if rest:
        parts.append(rest)
    return Template(tuple(parts))


# --- evaluating ---------------------------------------------------------------------------------


class Absent(WorkflowError):
    """An optional input the caller did not give: the argument that is exactly it is left out."""


@dataclass(frozen=True)
class Scope:
    """What expressions read while a workflow runs: its input, and the results of the steps so far."""

    input: Mapping[str, Any]
    results: Sequence[Any]
    names: Mapping[str, int]
    """A named step's index."""
    declared: frozenset[str] = frozenset()
    """The inputs the workflow declares: one of them not given is `Absent`, not a typo."""


def evaluate(path: Path, scope: Scope) -> Any:
    """The JSON value `path` points at; `WorkflowError` naming the expression and the missing part."""
    if path.root == "input":
        first = path.segments[0]
        if isinstance(first, str) and first not in scope.input and first in scope.declared:
            raise Absent(f"{path}: input {first!r} was not given")
        return _descend(scope.input, path.segments, path, "input")
    step = path.segments[0]
    index = scope.names.get(step) if isinstance(step, str) else step
    label = f"steps.{step}" if isinstance(step, str) else f"steps[{step}]"
    if index is None or not -len(scope.results) <= index < len(scope.results):
        raise WorkflowError(f"{path}: {label} has not run (only earlier steps can be read)")
    return _descend(scope.results[index], path.segments[2:], path, f"{label}.result")


def _descend(value: Any, segments: Sequence[Segment], path: Path, where: str) -> Any:
    for segment in segments:
        if isinstance(segment, int):
            if not isinstance(value, list):
                raise WorkflowError(f"{path}: {where} is {_kind(value)}, not a list: it has no [{segment}]")
            if not -len(value) <= segment < len(value):
                raise WorkflowError(
                    f"{path}: {where} has {counted(len(value), 'item')}: [{segment}] is out of range"
                )
            value, where = value[segment], f"{where}[{segment}]"
            continue
        if not isinstance(value, Mapping):
            raise WorkflowError(
                f"{path}: {where} is {_kind(value)}, not an object: it has no field {segment!r}"
            )
        if segment not in value:
            fields = ", ".join(sorted(map(str, value))[:20]) or "none"
            raise WorkflowError(f"{path}: {where} has no field {segment!r} (its fields: {fields})")
        value, where = value[segment], f"{where}.{segment}"
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, Mapping) else "a list" if isinstance(value, list) else "a value"


def render(template: Template, scope: Scope) -> Any:
    """The template's value: the expression's own JSON value when it is the whole string, else text."""
    whole = template.whole
    if whole is not None:
        return evaluate(whole, scope)
    return "".join(part if isinstance(part, str) else _text(evaluate(part, scope)) for part in template.parts)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def fill(value: Any, scope: Scope, *, top: bool = True) -> Any:
    """`value` (a step's `args`, a workflow's `output`) with every string rendered. A top-level
    argument that is exactly an input the caller did not give is left out (`Absent`)."""
    if isinstance(value, str):
        return render(parse(value), scope)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            try:
                out[str(key)] = fill(item, scope, top=False)
            except Absent:
                if not top or not isinstance(item, str) or parse(item).whole is None:
                    raise
        return out
    if isinstance(value, list):
        return [fill(item, scope, top=False) for item in value]
    return value
