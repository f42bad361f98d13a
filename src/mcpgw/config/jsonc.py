"""Reading and editing a client's JSON config in place: comments, order and layout kept.

Owns: a small parser of JSON with comments and trailing commas (what VS Code's settings.json
and mcp.json allow) that remembers where each value sits, and `Editor`, which sets or removes
one member of an object by rewriting only that member's text. Everything else in the file
(other keys, comments, indentation, line endings, a BOM) stays byte for byte.

Why our own: the stdlib `json` drops comments and reformats the whole file on a round trip;
the JSON5 libraries either do the same or (json-five's model API, whose model-level edits its
own README calls still in development) make each edit a syntax tree built by hand, with the new
member's layout still ours to get right. We need three operations (read, set a member, remove a
member), which a span-keeping parser of ~200 lines does without a dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"', re.DOTALL)
BOM = "\ufeff"


class JsoncError(ValueError):
    """Text that is not JSON (with comments); says where."""

    def __init__(self, reason: str, text: str, at: int) -> None:
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        super().__init__(f"{reason} at line {line} column {column}")


@dataclass
class Node:
    """One value and its span `[start, end)` in the text."""

    start: int
    end: int
    value: Any
    members: list[Member] = field(default_factory=list)
    """For an object: its members in file order."""


@dataclass
class Member:
    key: str
    start: int
    """Where the key's opening quote is."""
    node: Node


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def fail(self, reason: str) -> JsoncError:
        return JsoncError(reason, self.text, self.at)

    def skip(self) -> None:
        """Whitespace and comments."""
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char in " \t\r\n":
                self.at += 1
            elif text.startswith("//", self.at):
                newline = text.find("\n", self.at)
                self.at = len(text) if newline < 0 else newline
            elif text.startswith("/*", self.at):
                close = text.find("*/", self.at + 2)
                if close < 0:
                    raise self.fail("unclosed /* comment")
                self.at = close + 2
            else:
                return

    def value(self) -> Node:
        self.skip()
        if self.at >= len(self.text):
            raise self.fail("unexpected end of file")
        char = self.text[self.at]
        if char == "{":
            return self.container("}")
        if char == "[":
            return self.container("]")
        pattern = _STRING if char == '"' else _SCALAR
        match = pattern.match(self.text, self.at)
        if match is None:
            raise self.fail(f"unexpected {char!r}")
        start, self.at = self.at, match.end()
        return Node(start, self.at, json.loads(match.group()))

    def container(self, close: str) -> Node:
        start = self.at
        self.at += 1
        node = Node(start, start, {} if close == "}" else [])
        while True:
            self.skip()
            if self.text.startswith(close, self.at):
                break
            if close == "}":
                key_start = self.at
                match = _STRING.match(self.text, self.at)
                if match is None:
                    raise self.fail("expected a quoted key")
                self.at = match.end()
                self.skip()
                if not self.text.startswith(":", self.at):
                    raise self.fail("expected ':'")
                self.at += 1
                key = json.loads(match.group())
                child = self.value()
                node.value[key] = child.value
                node.members.append(Member(key, key_start, child))
            else:
                node.value.append(self.value().value)
            self.skip()
            if self.text.startswith(",", self.at):
                self.at += 1
            elif not self.text.startswith(close, self.at):
                raise self.fail(f"expected ',' or {close!r}")
        self.at += 1
        node.end = self.at
        return node


def parse(text: str) -> Node:
    """The root value with its spans; an empty file reads as `{}`."""
    if not text.strip():
        return Node(0, 0, {})
    parser = _Parser(text)
    root = parser.value()
    parser.skip()
    if parser.at != len(text):
        raise parser.fail("unexpected text after the JSON value")
    return root


def loads(text: str) -> Any:
    return parse(text.removeprefix(BOM)).value


class Editor:
    """One file's text, edited member by member."""

    def __init__(self, text: str) -> None:
        self.bom = BOM if text.startswith(BOM) else ""
        self.text = text.removeprefix(self.bom)
        self.newline = "\r\n" if "\r\n" in self.text else "\n"
        self.unit = _indent_unit(self.text)
        self.data: Any = parse(self.text).value

    def dumps(self) -> str:
        text = self.text if self.text.strip() else "{}\n"
        return self.bom + text

    def _object(self, path: Sequence[str]) -> Node | None:
        node = parse(self.text) if self.text.strip() else None
        if node is None:
            return None
        for key in path:
            if not isinstance(node.value, dict):
                return None
            found = next((m for m in node.members if m.key == key), None)
            if found is None:
                return None
            node = found.node
        return node if isinstance(node.value, dict) else None

    def set(self, path: Sequence[str], key: str, value: Any) -> None:
        """Set `key` in the object at `path`, creating the objects on the way."""
        if not self.text.strip():
            self.text = "{}" + self.newline
        node = self._object(())
        for depth, name in enumerate(path):
            if node is None:
                break
            if name not in node.value:
                nested: Any = value
                for inner in reversed((*path[depth + 1 :], key)):
                    nested = {inner: nested}
                self._put(node, name, nested)
                self.data = parse(self.text).value
                return
            node = self._object(path[: depth + 1])
        if node is None:
            raise ValueError(f"'{'.'.join(path)}' is not an object")
        self._put(node, key, value)
        self.data = parse(self.text).value

    def remove(self, path: Sequence[str], key: str) -> None:
        """Remove `key` (and the line it had to itself) from the object at `path`, if it is there."""
        obj = self._object(path)
        members = obj.members if obj is not None else []
        index = next((i for i, m in enumerate(members) if m.key == key), None)
        if obj is None or index is None:
            return
        text, member = self.text, members[index]
        start = _line_start_if_blank(text, member.start)
        end = _after_comma(text, member.node.end)
        own_line = start != member.start
        if own_line:
            start = _comments_above(text, start)  # a `//` line right above a member describes it
        if len(members) == 1:
            start, end = obj.start + 1, obj.end - 1
        elif end == member.node.end and index == len(members) - 1:
            # The last member without a trailing comma: the comma before it goes too.
            previous = members[index - 1].node.end
            if own_line:
                comma = _after_comma(text, previous) - 1
                text = text[:comma] + text[comma + 1 :]
                start, end = start - 1, end - 1
                end += _blank_rest(text, end)
            else:
                start = previous
        elif own_line:
            end += _blank_rest(text, end)
        else:
            end += len(text[end:]) - len(text[end:].lstrip(" \t"))
        self.text = text[:start] + text[end:]
        self.data = parse(self.text).value

    def _put(self, obj: Node, key: str, value: Any) -> None:
        existing = next((m for m in obj.members if m.key == key), None)
        if existing is not None:
            indent = _indent_of(self.text, existing.start)
            self.text = (
                self.text[: existing.node.start] + self._dump(value, indent) + self.text[existing.node.end :]
            )
            return
        if not obj.members:
            outer = _indent_of(self.text, obj.start)
            inner = outer + self.unit
            body = f"{self.newline}{inner}{json.dumps(key)}: {self._dump(value, inner)}{self.newline}{outer}"
            self.text = self.text[: obj.start + 1] + body + self.text[obj.end - 1 :]
            return
        last = obj.members[-1]
        indent = _indent_of(self.text, obj.members[0].start)
        line = f"{json.dumps(key)}: {self._dump(value, indent)}"
        after = _after_comma(self.text, last.node.end)
        comma = "" if after != last.node.end else ","
        # After a trailing `// comment` on the last member's line, not inside it.
        end_of_line = _end_of_line_if_only_comment(self.text, after)
        if end_of_line is not None:
            insert_at, piece = end_of_line, f"{self.newline}{indent}{line}"
        else:
            insert_at, piece = after, f" {line}"
        self.text = self.text[:insert_at] + piece + self.text[insert_at:]
        if comma:
            self.text = self.text[: last.node.end] + comma + self.text[last.node.end :]

    def _dump(self, value: Any, indent: str) -> str:
        unit: int | str = len(self.unit) if self.unit.strip(" ") == "" else self.unit
        text = json.dumps(value, indent=unit, ensure_ascii=False)
        return text.replace("\n", self.newline + indent)


def _indent_unit(text: str) -> str:
    widths = [m.group(1) for m in re.finditer(r"\n([ \t]+)\S", text)]
    if not widths:
        return "  "
    if any(w.startswith("\t") for w in widths):
        return "\t"
    return " " * min(len(w) for w in widths)


def _indent_of(text: str, at: int) -> str:
    line_start = text.rfind("\n", 0, at) + 1
    match = re.match(r"[ \t]*", text[line_start:at])
    return match.group() if match else ""


def _line_start_if_blank(text: str, at: int) -> int:
    line_start = text.rfind("\n", 0, at) + 1
    return line_start if not text[line_start:at].strip() else at


def _comments_above(text: str, line_start: int) -> int:
    """The start of the `//` comment lines directly above the line starting at `line_start`."""
    while line_start > 0:
        previous = text.rfind("\n", 0, line_start - 1) + 1
        if not text[previous : line_start - 1].strip().startswith("//"):
            break
        line_start = previous
    return line_start


def _after_comma(text: str, at: int) -> int:
    """Past the comma that follows `at` (across spaces only), else `at`."""
    match = re.match(r"[ \t]*,", text[at:])
    return at + match.end() if match else at


def _blank_rest(text: str, at: int) -> int:
    """How many characters from `at` to the next line's start, when only spaces are between."""
    match = re.match(r"[ \t]*\r?\n", text[at:])
    return match.end() if match else 0


def _end_of_line_if_only_comment(text: str, at: int) -> int | None:
    """Where the line of `at` ends, when only spaces or a `//` comment follow `at` on it."""
    match = re.match(r"[ \t]*(//[^\n]*)?(?=\r?\n)", text[at:])
    if match is None:
        return None
    return at + match.end()
