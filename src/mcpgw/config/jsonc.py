"""Reading and editing a client's JSON config in place: comments, order and layout kept.

Owns: reading JSON with comments and trailing commas (what VS Code's settings.json and mcp.json
allow) while knowing where each value sits: comments and trailing commas are blanked out with
spaces, so the stdlib's C decoder reads the text at the original offsets; and `Editor`, which sets
or removes one member of an object by rewriting only that member's text. Everything else in the
file (other keys, comments, indentation, line endings, a BOM) stays byte for byte.

Why our own: the stdlib `json` drops comments and reformats the whole file on a round trip;
the JSON5 libraries either do the same or (json-five's model API, whose model-level edits its
own README calls still in development) make each edit a syntax tree built by hand, with the new
member's layout still ours to get right. We need three operations (read, set a member, remove a
member), which a few hundred lines do without a dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Strings as an unrolled loop (`"[^"\\]*(?:\\.[^"\\]*)*"`): an alternation per character took
# seconds on a 5 MB ~/.claude.json.
_STRING = re.compile(r'"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*"')
_QUOTED = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_COMMENT = re.compile(_QUOTED + r"|//[^\n]*|/\*.*?(?:\*/|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(_QUOTED + r"|,(?=\s*[}\]])")
_SPACE = re.compile(r"\s*")
_DECODER = json.JSONDecoder()
BOM = "\ufeff"


class JsoncError(ValueError):
    """Text that is not JSON (with comments); says where."""

    def __init__(self, reason: str, text: str, at: int) -> None:
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        super().__init__(f"{reason} at line {line} column {column}")


@dataclass
class Node:
    """One value and its span `[start, end)` in the text; an object's members are found when asked."""

    start: int
    end: int
    value: Any
    clean: str = field(default="", repr=False)
    """The whole text with comments and trailing commas blanked out (same length, same offsets)."""
    _members: list[Member] | None = field(default=None, repr=False)

    @property
    def members(self) -> list[Member]:
        """For an object: its members in file order (spans found by the C JSON decoder)."""
        if self._members is None:
            self._members = _members_of(self) if isinstance(self.value, dict) else []
        return self._members


@dataclass
class Member:
    key: str
    start: int
    """Where the key's opening quote is."""
    node: Node


def _blank(text: str) -> str:
    """`text` with comments and trailing commas replaced by spaces (newlines kept): plain JSON whose
    every offset is the original's, so the C decoder reads it and its positions are ours."""

    def comment(match: re.Match[str]) -> str:
        found = match.group()
        if found.startswith('"') or not found.startswith("/"):
            return found
        if found.startswith("/*") and (len(found) < 4 or not found.endswith("*/")):
            raise JsoncError("unclosed /* comment", text, match.start())
        return re.sub(r"[^\n]", " ", found)

    # Most files have neither (a big ~/.claude.json is plain JSON): skip the passes, each of which
    # calls back once per string.
    if re.search(r"/[/*]", text):
        text = _COMMENT.sub(comment, text)
    if re.search(r",\s*[}\]]", text):
        text = _TRAILING_COMMA.sub(lambda m: m.group() if m.group().startswith('"') else " ", text)
    return text


def _members_of(node: Node) -> list[Member]:
    clean, members = node.clean, []
    at = _SPACE.match(clean, node.start + 1).end()  # type: ignore[union-attr]
    while clean[at] != "}":
        key = _STRING.match(clean, at)
        assert key is not None  # the whole text was decoded already
        colon = _SPACE.match(clean, key.end()).end()  # type: ignore[union-attr]
        start = _SPACE.match(clean, colon + 1).end()  # type: ignore[union-attr]
        value, end = _DECODER.raw_decode(clean, start)
        members.append(Member(json.loads(key.group()), at, Node(start, end, value, clean)))
        at = _SPACE.match(clean, end).end()  # type: ignore[union-attr]
        if clean[at] == ",":
            at = _SPACE.match(clean, at + 1).end()  # type: ignore[union-attr]
    return members


def parse(text: str) -> Node:
    """The root value with its span; an empty file reads as `{}`."""
    if not text.strip():
        return Node(0, 0, {})
    clean = _blank(text)
    try:
        value = json.loads(clean)
    except json.JSONDecodeError as exc:
        raise JsoncError(exc.msg, text, exc.pos) from None
    start = len(clean) - len(clean.lstrip())
    return Node(start, len(clean.rstrip()), value, clean)


def loads(text: str) -> Any:
    return parse(text.removeprefix(BOM)).value


class Editor:
    """One file's text, edited member by member."""

    def __init__(self, text: str) -> None:
        self.bom = BOM if text.startswith(BOM) else ""
        self.text = text.removeprefix(self.bom)
        self.newline = "\r\n" if "\r\n" in self.text else "\n"
        self.unit = _indent_unit(self.text)
        self._root = parse(self.text)
        self.data: Any = self._root.value

    def _edited(self, text: str) -> None:
        self.text = text
        self._root = parse(text)
        self.data = self._root.value

    def dumps(self) -> str:
        text = self.text if self.text.strip() else "{}\n"
        return self.bom + text

    def _object(self, path: Sequence[str]) -> Node | None:
        node = self._root
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
            self._edited("{}" + self.newline)
        node = self._object(())
        for depth, name in enumerate(path):
            if node is None:
                break
            if name not in node.value:
                nested: Any = value
                for inner in reversed((*path[depth + 1 :], key)):
                    nested = {inner: nested}
                self._put(node, name, nested)
                return
            node = self._object(path[: depth + 1])
            if node is None:
                raise ValueError(f"'{'.'.join(path[: depth + 1])}' is not an object")
        if node is None:
            raise ValueError("the top level is not an object")
        self._put(node, key, value)

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
        self._edited(text[:start] + text[end:])

    def _put(self, obj: Node, key: str, value: Any) -> None:
        text = self.text
        existing = next((m for m in obj.members if m.key == key), None)
        if existing is not None:
            indent = _indent_of(text, existing.start)
            dumped = self._dump(value, indent)
            self._edited(text[: existing.node.start] + dumped + text[existing.node.end :])
            return
        if not obj.members:
            outer = _indent_of(text, obj.start)
            inner = outer + self.unit
            body = f"{self.newline}{inner}{json.dumps(key)}: {self._dump(value, inner)}{self.newline}{outer}"
            self._edited(text[: obj.start + 1] + body + text[obj.end - 1 :])
            return
        last = obj.members[-1]
        indent = _indent_of(text, obj.members[0].start)
        line = f"{json.dumps(key)}: {self._dump(value, indent)}"
        after = _after_comma(text, last.node.end)
        comma = "" if after != last.node.end else ","
        # After a trailing `// comment` on the last member's line, not inside it.
        end_of_line = _end_of_line_if_only_comment(text, after)
        if end_of_line is not None:
            insert_at, piece = end_of_line, f"{self.newline}{indent}{line}"
        else:
            insert_at, piece = after, f" {line}"
        text = text[:insert_at] + piece + text[insert_at:]
        if comma:
            text = text[: last.node.end] + comma + text[last.node.end :]
        self._edited(text)

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
