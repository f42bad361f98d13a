"""The test upstream's twin in the standard library only: the same tools, resources, templates and
prompt as servers/upstream.py, listed as FastMCP lists them, with the same results.

Why: upstream.py costs about 1.3 s of CPU per start (FastMCP, mcp_types, pydantic), this one tens of
milliseconds, and the suite starts an upstream for every `mcpgw pin`, `tools`, `personas` or gateway
it runs. Tests where FastMCP's own behaviour is the point (both protocol eras on the upstream side,
HTTP and SSE, OAuth, pydantic's argument errors) keep upstream.py; `bench/run.py` keeps it as its
direct baseline. `test_lite_upstream` checks that the two answer alike.

Speaks the handshake era over stdio, as servers on older SDKs do: a `server/discover` probe gets
-32601, so mcpgw falls back to `initialize`. Argument errors are checked by type and name only, with
a message of pydantic's first line. Options: `--name`, `--tools N`, `--lorem` (as upstream.py's);
`$UPSTREAM_CALL_LOG` and `$UPSTREAM_CANCEL_MARKER` as upstream.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA="
VERSION = "2025-11-25"
KNOWN_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
TAGS = {"fastmcp": {"tags": []}}
WRAPPED = {"fastmcp": {"wrap_result": True}}
READ_ONLY = {"readOnlyHint": True}


def wrapped(kind: dict[str, Any]) -> dict[str, Any]:
    """FastMCP's output schema for a function returning a plain value: `{"result": value}`."""
    return {
        "properties": {"result": kind},
        "required": ["result"],
        "type": "object",
        "x-fastmcp-wrap-result": True,
    }


def tool(
    name: str,
    description: str,
    properties: dict[str, Any],
    *,
    required: tuple[str, ...] = (),
    output: dict[str, Any] | None = None,
    annotations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    schema: dict[str, Any] = {"additionalProperties": False, "properties": properties, "type": "object"}
    if required:
        schema["required"] = list(required)
    tool: dict[str, Any] = {"_meta": TAGS, "description": description, "inputSchema": schema, "name": name}
    if annotations:
        tool["annotations"] = annotations
    if output is not None:
        tool["outputSchema"] = output
    tool["title"] = name.replace("_", " ").title()
    return tool


STRING = {"type": "string"}
TOOLS = [
    tool(
        "echo",
        "Echo the message back.",
        {"message": STRING},
        required=("message",),
        output=wrapped(STRING),
        annotations=READ_ONLY,
    ),
    tool(
        "add",
        "Add two integers; structured output.",
        {"a": {"type": "integer"}, "b": {"type": "integer"}},
        required=("a", "b"),
        output={"additionalProperties": {"type": "integer"}, "type": "object"},
        annotations=READ_ONLY,
    ),
    tool("image", "Return a 1x1 PNG.", {}),
    tool("audio", "Return a tiny WAV.", {}),
    tool("mixed", "Text, embedded resource and resource link in one result, with _meta.", {}),
    tool(
        "fail",
        "Always raises: the result has isError=true.",
        {"reason": {"default": "it failed", "type": "string"}},
        output=wrapped(STRING),
    ),
    tool(
        "slow",
        "Report progress `steps` times.",
        {"delay": {"default": 0.05, "type": "number"}, "steps": {"default": 3, "type": "integer"}},
        output=wrapped(STRING),
    ),
    tool(
        "sleep",
        "Sleep; used for timeouts and cancellation.",
        {"seconds": {"type": "number"}},
        required=("seconds",),
        output=wrapped(STRING),
    ),
    tool("pid", "The process id of this upstream.", {}, output=wrapped({"type": "integer"})),
    tool(
        "roots",
        "The roots the client (mcpgw) answers to roots/list.",
        {},
        output=wrapped({"items": STRING, "type": "array"}),
    ),
    tool(
        "grow",
        "Add a tool at run time and announce the list change.",
        {"tool_name": STRING},
        required=("tool_name",),
        output=wrapped(STRING),
    ),
]
RESOURCES = [
    {
        "_meta": TAGS,
        "description": "A static text resource.",
        "mimeType": "text/plain",
        "name": "static",
        "uri": "test://static",
    }
]
TEMPLATES = [
    {
        "_meta": TAGS,
        "description": "An item by id.",
        "mimeType": "application/json",
        "name": "item",
        "uriTemplate": "test://items/{item_id}",
    }
]
GREET_ARG = (
    'Provide a value matching the following JSON schema: {"type":"string"}. Encode non-string values as JSON.'
)
PROMPTS = [
    {
        "_meta": TAGS,
        "arguments": [{"description": GREET_ARG, "name": "name", "required": True}],
        "description": "Greet someone.",
        "name": "greet",
    }
]
CAPABILITIES = {
    "logging": {},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True, "subscribe": False},
    "tools": {"listChanged": True},
}
PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "number": (int, float)}


class Failed(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class Lite:
    """The server: upstream.py's items; a subclass serves others (servers/mutable.py)."""

    instructions: str | None = "Test upstream for mcpgw."
    resources = RESOURCES
    templates = TEMPLATES
    prompts = PROMPTS

    def __init__(self, name: str, extra_tools: int = 0, lorem: bool = False) -> None:
        self.name = name
        self.tools = [dict(t) for t in TOOLS]
        self.extra: dict[str, Callable[..., Any]] = {}
        for i in range(extra_tools):
            self.tools.append(
                tool(
                    f"gen_{i:04d}",
                    f"Generated tool number {i} for catalog benchmarks.",
                    {"x": {"default": 0, "type": "integer"}},
                    output=wrapped(STRING),
                )
            )
            self.extra[f"gen_{i:04d}"] = lambda x=0, _i=i: f"tool {_i}: {x}"
        if lorem:
            self.tools.append(
                tool(
                    "lorem",
                    "About `size` characters of text, one e-mail address and card number per ~1 kB "
                    "(benchmarks).",
                    {"size": {"default": 1000, "type": "integer"}},
                    output=wrapped(STRING),
                )
            )
            self.extra["lorem"] = lorem_text
        self.write_lock = threading.Lock()
        self.cancels: dict[Any, threading.Event] = {}
        self.asked: dict[int, tuple[threading.Event, list[Any]]] = {}
        self.asks = 0

    # --- the wire ---------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self.write_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def ask(self, method: str) -> Any:
        """A request to the client (roots/list), answered on the reader's thread."""
        with self.write_lock:
            self.asks += 1
            number = self.asks
        done: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        self.asked[number] = done
        self.send({"jsonrpc": "2.0", "id": number, "method": method})
        done[0].wait()
        return done[1][0]

    def serve(self) -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            message = json.loads(line)
            if "method" not in message:  # an answer to one of our requests
                waiting = self.asked.pop(message.get("id"), None)
                if waiting is not None:
                    waiting[1].append(message.get("result", {}))
                    waiting[0].set()
            elif "id" not in message:
                if message["method"] == "notifications/cancelled":
                    event = self.cancels.get(message.get("params", {}).get("requestId"))
                    if event is not None:
                        event.set()
            elif message["method"] == "tools/call":  # may wait: in a thread, so others go on
                self.cancels[message["id"]] = threading.Event()
                threading.Thread(target=self.answer, args=(message,), daemon=True).start()
            else:
                self.answer(message)

    def answer(self, message: dict[str, Any]) -> None:
        method, params = message["method"], message.get("params") or {}
        try:
            handler = getattr(self, "do_" + method.replace("/", "_"), None)
            if handler is None:
                raise Failed(-32601, "Method not found", method)
            result = handler(params, message["id"])
        except Failed as failed:
            error: dict[str, Any] = {"code": failed.code, "message": failed.message}
            if failed.data is not None:
                error["data"] = failed.data
            self.send({"jsonrpc": "2.0", "id": message["id"], "error": error})
            return
        finally:
            self.cancels.pop(message["id"], None)
        if result is not None:  # None: cancelled, answered by nothing (as the SDK does)
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": result})

    # --- the methods --------------------------------------------------------------------------------

    def do_initialize(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        asked = params.get("protocolVersion")
        hello = {
            "capabilities": CAPABILITIES,
            "protocolVersion": asked if asked in KNOWN_VERSIONS else VERSION,
            "serverInfo": {"name": self.name, "version": "lite"},
        }
        if self.instructions is not None:
            hello["instructions"] = self.instructions
        return hello

    def do_ping(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        return {}

    def do_logging_setLevel(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        return {}

    def do_tools_list(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        return {"tools": list(self.tools)}

    def do_resources_list(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        return {"resources": self.resources}

    def do_resources_templates_list(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        return {"resourceTemplates": self.templates}

    def do_prompts_list(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        return {"prompts": self.prompts}

    def do_resources_read(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        uri = str(params.get("uri"))
        return {"contents": [self.read(uri)]}

    def read(self, uri: str) -> dict[str, Any]:
        if uri == "test://static":
            return {"mimeType": "text/plain", "text": "static text", "uri": uri}
        prefix = "test://items/"
        if uri.startswith(prefix) and "/" not in uri[len(prefix) :] and uri != prefix:
            text = json.dumps({"id": uri[len(prefix) :]})
            return {"mimeType": "application/json", "text": text, "uri": uri}
        raise Failed(-32602, f"Resource not found: '{uri}'", {"uri": uri})

    def do_prompts_get(self, params: dict[str, Any], _: Any) -> dict[str, Any]:
        if params.get("name") not in {p["name"] for p in self.prompts}:
            raise Failed(-32602, f"Unknown prompt: '{params.get('name')}'")
        arguments = params.get("arguments") or {}
        if "name" not in arguments:
            raise Failed(-32602, "Missing required arguments: {'name'}")
        text = f"Hello, {arguments['name']}!"
        return {
            "description": "Greet someone.",
            "messages": [{"content": {"text": text, "type": "text"}, "role": "user"}],
        }

    def do_tools_call(self, params: dict[str, Any], request: Any) -> dict[str, Any] | None:
        name, arguments = str(params.get("name")), params.get("arguments") or {}
        if log := os.environ.get("UPSTREAM_CALL_LOG"):
            with open(log, "a") as handle:
                handle.write(json.dumps({"name": name, "arguments": params.get("arguments")}) + "\n")
        listed = next((t for t in self.tools if t["name"] == name), None)
        if listed is None:
            return error_result(f"Unknown tool: '{name}'")
        problem = argument_problem(name, listed["inputSchema"], arguments)
        if problem is not None:
            return error_result(problem)
        meta = params.get("_meta") or {}
        try:
            value = self.run(name, arguments, request, meta.get("progressToken"))
        except Cancelled:
            return None
        except Exception as exc:  # as FastMCP answers a tool that raised
            return error_result(f"Error calling tool '{name}': {exc}")
        if isinstance(value, dict) and "content" in value:
            return value
        if name == "add":
            return {"content": [text(json.dumps(value, separators=(",", ":")))], "isError": False} | {
                "structuredContent": value
            }
        shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        return {
            "_meta": WRAPPED,
            "content": [text(shown)],
            "isError": False,
            "structuredContent": {"result": value},
        }

    def run(self, name: str, arguments: dict[str, Any], request: Any, progress: Any) -> Any:
        cancel = self.cancels.get(request) or threading.Event()
        if name in self.extra:
            return self.extra[name](**arguments)
        if name == "echo":
            return arguments["message"]
        if name == "add":
            return {"sum": arguments["a"] + arguments["b"]}
        if name == "image":
            return media([{"data": PNG_1x1, "mimeType": "image/png", "type": "image"}])
        if name == "audio":
            return media([{"data": WAV, "mimeType": "audio/wav", "type": "audio"}])
        if name == "mixed":
            return {
                "_meta": {"test/tag": "mixed-meta"},
                "content": [
                    text("mixed"),
                    {
                        "resource": {"mimeType": "text/plain", "text": "inside", "uri": "test://embedded"},
                        "type": "resource",
                    },
                    {"name": "static", "type": "resource_link", "uri": "test://static"},
                ],
                "isError": False,
            }
        if name == "fail":
            raise ValueError(arguments.get("reason", "it failed"))
        if name == "slow":
            steps, delay = int(arguments.get("steps", 3)), float(arguments.get("delay", 0.05))
            for i in range(steps):
                if progress is not None:
                    self.send(
                        {
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {
                                "message": f"step {i + 1}",
                                "progress": float(i + 1),
                                "progressToken": progress,
                                "total": float(steps),
                            },
                        }
                    )
                if cancel.wait(delay):
                    raise Cancelled
            return f"done after {steps} steps"
        if name == "sleep":
            if cancel.wait(float(arguments["seconds"])):
                if marker := os.environ.get("UPSTREAM_CANCEL_MARKER"):
                    with open(marker, "a") as handle:
                        handle.write("cancelled\n")
                raise Cancelled
            return f"slept {arguments['seconds']}"
        if name == "pid":
            return os.getpid()
        if name == "roots":
            return [str(root["uri"]) for root in self.ask("roots/list").get("roots", [])]
        if name == "grow":
            added = str(arguments["tool_name"])
            self.tools.append(tool(added, "", {}, output=wrapped(STRING)))
            self.tools[-1].pop("description")
            self.extra[added] = lambda: "added tool"
            self.send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            return f"added {added}"
        raise ValueError(f"no tool {name}")


class Cancelled(Exception):
    """The client cancelled the call: it gets no answer."""


def text(value: str) -> dict[str, Any]:
    return {"text": value, "type": "text"}


def media(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": content, "isError": False}


def error_result(message: str) -> dict[str, Any]:
    return {"content": [text(message)], "isError": True}


def argument_problem(name: str, schema: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """pydantic's first lines for what FastMCP would refuse: a missing, unexpected or mistyped argument."""
    properties = schema["properties"]
    for key in schema.get("required", []):
        if key not in arguments:
            return f"1 validation error for call[{name}]\n{key}\n  Missing required argument"
    for key, value in arguments.items():
        if key not in properties:
            return f"1 validation error for call[{name}]\n{key}\n  Unexpected keyword argument"
        wanted = PYTHON_TYPES.get(properties[key].get("type"))
        if wanted is not None and (not isinstance(value, wanted) or isinstance(value, bool)):
            kind = properties[key]["type"]
            return f"1 validation error for call[{name}]\n{key}\n  Input should be a valid {kind}"
    return None


def lorem_text(size: int = 1000) -> str:
    line = (
        "Order shipped to ann@example.com, paid with 4111 1111 1111 1111; "
        + "the quick brown fox jumps over the lazy dog. " * 20
        + "\n"
    )
    return (line * (size // len(line) + 1))[:size]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tools", type=int, default=0)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--lorem", action="store_true")
    args = parser.parse_args()
    Lite(args.name, args.tools, args.lorem).serve()


if __name__ == "__main__":
    main()
