"""MCP sampling <-> chat completions: the request and answer shapes, nothing else.

Owns turning an MCP `sampling/createMessage` request (system prompt, messages
with text, image, audio, `tool_use` and `tool_result` blocks, temperature, max
tokens, stop sequences, `tools` and `toolChoice`) into chat-completions
arguments, and a chat-completions response back into an MCP
`CreateMessageResult`. Pure functions: no litellm, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return [content] if isinstance(content, dict) else []


def _chat_part(block: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        url = f"data:{block.get('mimeType', 'image/png')};base64,{block.get('data', '')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "audio":
        fmt = str(block.get("mimeType", "audio/wav")).rsplit("/", 1)[-1]
        return {"type": "input_audio", "input_audio": {"data": block.get("data", ""), "format": fmt}}
    return None


def _result_text(block: Mapping[str, Any]) -> str:
    parts = [str(b.get("text", "")) for b in _blocks(block.get("content")) if b.get("type") == "text"]
    if block.get("structuredContent") is not None:
        parts.append(json.dumps(block["structuredContent"]))
    return "\n".join(parts)


def max_tokens(params: Mapping[str, Any]) -> int:
    """The request's `maxTokens` (1024 when it gives none): what the model is asked to stay within."""
    return int(params.get("maxTokens") or 1024)


def to_chat_request(params: Mapping[str, Any], *, context: str | None = None) -> dict[str, Any]:
    """An MCP `sampling/createMessage` request as chat-completions arguments."""
    messages: list[dict[str, Any]] = []
    system = "\n\n".join(p for p in (params.get("systemPrompt"), context) if p)
    if system:
        messages.append({"role": "system", "content": system})
    for message in params.get("messages") or []:
        role = message.get("role", "user")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for block in _blocks(message.get("content")):
            if block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {})
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
            elif block.get("type") == "tool_result":
                messages.append(
                    {"role": "tool", "tool_call_id": block.get("toolUseId"), "content": _result_text(block)}
                )
            elif (part := _chat_part(block)) is not None:
                parts.append(part)
        if calls:
            text = " ".join(p["text"] for p in parts if p["type"] == "text")
            messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
        elif parts:
            only_text = all(p["type"] == "text" for p in parts)
            content: Any = "\n".join(p["text"] for p in parts) if only_text else parts
            messages.append({"role": role, "content": content})
    request: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens(params)}
    if params.get("temperature") is not None:
        request["temperature"] = params["temperature"]
    if params.get("stopSequences"):
        request["stop"] = list(params["stopSequences"])
    tools = params.get("tools")
    if tools:
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description") or "",
                    "parameters": tool.get("inputSchema") or {"type": "object"},
                },
            }
            for tool in tools
        ]
        mode = (params.get("toolChoice") or {}).get("mode")
        if mode in ("auto", "required", "none"):
            request["tool_choice"] = mode
    return request


_STOP_REASONS = {
    "stop": "endTurn",
    "length": "maxTokens",
    "tool_calls": "toolUse",
    "function_call": "toolUse",
}


def from_chat_response(response: Any, *, tools: bool) -> dict[str, Any]:
    """A chat-completions response as an MCP `CreateMessageResult` (a block list when tools were offered)."""
    choice = response.choices[0]
    message = choice.message
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": str(message.content)})
    for call in getattr(message, "tool_calls", None) or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            arguments = {"_raw": call.function.arguments}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    stop = _STOP_REASONS.get(str(choice.finish_reason), str(choice.finish_reason or "endTurn"))
    result: dict[str, Any] = {"role": "assistant", "model": str(response.model or ""), "stopReason": stop}
    result["content"] = blocks if tools else blocks[0]
    return result
