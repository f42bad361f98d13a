"""The in-place JSON-with-comments editor behind `install --write`: only the edited member changes."""

from __future__ import annotations

import pytest

from mcpgw.config.jsonc import Editor, JsoncError, loads


def test_reads_comments_and_trailing_commas() -> None:
    assert loads('{"a": [1, 2,], /* c */ "b": "x//y", // z\n}') == {"a": [1, 2], "b": "x//y"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"a": 1,, }', "line 1 column 11"),
        ('{\n  "a": tru\n}', "line 2 column 8"),
        ('{"a": 1} x', "line 1 column 10"),
        ('{"a": 1 /* x', r"unclosed /\* comment at line 1 column 9"),
        ('{"a": "not // a comment", "b": tru}', "line 1 column 32"),
    ],
)
def test_errors_say_where(text: str, where: str) -> None:
    with pytest.raises(JsoncError, match=where):
        loads(text)


def test_set_keeps_everything_else_byte_for_byte() -> None:
    text = (
        '\ufeff{\r\n\t"theme": "dark", // mine\r\n'
        '\t"mcpServers": {\r\n\t\t"a": {"command": "x"}\r\n\t}\r\n}\r\n'
    )
    editor = Editor(text)
    editor.set(("mcpServers",), "m", {"command": "y"})
    out = editor.dumps()
    assert out.startswith('\ufeff{\r\n\t"theme": "dark", // mine\r\n')
    assert '\t\t"a": {"command": "x"},\r\n\t\t"m": {\r\n\t\t\t"command": "y"\r\n\t\t}\r\n\t}\r\n}\r\n' in out
    editor.remove(("mcpServers",), "m")
    assert editor.dumps() == text


def test_insert_after_a_trailing_comment_and_comma() -> None:
    editor = Editor('{\n  "s": {\n    "a": 1, // one\n  },\n}\n')
    editor.set(("s",), "b", 2)
    assert editor.dumps() == '{\n  "s": {\n    "a": 1, // one\n    "b": 2\n  },\n}\n'
    editor = Editor('{\n  "s": {\n    "a": 1 // one\n  }\n}\n')
    editor.set(("s",), "b", 2)
    assert editor.dumps() == '{\n  "s": {\n    "a": 1, // one\n    "b": 2\n  }\n}\n'


def test_missing_objects_are_created_and_empty_files_filled() -> None:
    editor = Editor('{"editor.fontSize": 14}')
    editor.set(("mcp", "servers"), "m", 1)
    assert loads(editor.dumps()) == {"editor.fontSize": 14, "mcp": {"servers": {"m": 1}}}
    empty = Editor("")
    empty.set(("servers",), "m", 1)
    assert loads(empty.dumps()) == {"servers": {"m": 1}}


def test_remove_takes_its_line_and_its_comment() -> None:
    text = '{\n  "s": {\n    // first\n    "a": 1,\n    "b": 2\n  }\n}\n'
    editor = Editor(text)
    editor.remove(("s",), "a")
    assert editor.dumps() == '{\n  "s": {\n    "b": 2\n  }\n}\n'
    editor.remove(("s",), "b")
    assert editor.dumps() == '{\n  "s": {}\n}\n'
    inline = Editor('{"s": {"a": 1, "b": 2, "c": 3}}')
    inline.remove(("s",), "c")
    inline.remove(("s",), "a")
    assert inline.dumps() == '{"s": {"b": 2}}'


def test_set_on_something_that_is_not_an_object_is_refused() -> None:
    editor = Editor('{"mcpServers": []}')
    with pytest.raises(ValueError, match="'mcpServers' is not an object"):
        editor.set(("mcpServers",), "m", 1)
