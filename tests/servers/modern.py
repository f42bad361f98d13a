"""A 2026-07-28 (stateless) test upstream whose tools need client input: sampling and elicitation.

Speaks only the stateless revision over stdio, so mcpgw reaches it with
`server/discover`. Its tools answer the first call with an `input_required`
result and finish when the call is retried with the responses, as the
revision's multi-round-trip flow has it:

- `summarize(text)`: asks for one sampling completion and returns its text;
- `weather_agent(city)`: sampling with a tool offered (`get_weather`), returns the tool use asked for;
- `confirm(question)`: asks the client for an elicitation and returns the answer;
- prompt `poem(topic)`: asks for one sampling completion and returns it as the prompt's message.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

TOOLS = [
    types.Tool(
        name="summarize",
        description="Summarize a text with the client's model.",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    ),
    types.Tool(
        name="weather_agent",
        description="Let the client's model pick a tool.",
        input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    ),
    types.Tool(
        name="confirm",
        description="Ask the user a yes/no question.",
        input_schema={
            "type": "object",
            "properties": {"question": {"type": "string"}},
            "required": ["question"],
        },
    ),
]


def _sampling(params: dict[str, Any]) -> types.InputRequiredResult:
    request = types.CreateMessageRequest(params=types.CreateMessageRequestParams.model_validate(params))
    return types.InputRequiredResult(input_requests={"llm": request}, request_state="round-1")


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
    arguments = params.arguments or {}
    answer = (params.input_responses or {}).get("llm")
    if params.name == "summarize":
        if answer is None:
            return _sampling(
                {
                    "messages": [{"role": "user", "content": {"type": "text", "text": arguments["text"]}}],
                    "systemPrompt": "Summarize in one line.",
                    "includeContext": "thisServer",
                    "maxTokens": 50,
                    "stopSequences": ["END"],
                    "temperature": 0.1,
                    "modelPreferences": {"hints": [{"name": arguments.get("hint", "")}]}
                    if arguments.get("hint")
                    else None,
                }
            )
        if params.request_state != "round-1":
            return types.CallToolResult(
                content=[types.TextContent(type="text", text="lost state")], is_error=True
            )
        content = answer.model_dump(by_alias=True, exclude_none=True)["content"]
        return _text(content["text"] if isinstance(content, dict) else json.dumps(content))
    if params.name == "weather_agent":
        if answer is None:
            return _sampling(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": {"type": "text", "text": f"weather in {arguments['city']}?"},
                        }
                    ],
                    "maxTokens": 50,
                    "stopSequences": ["END"],
                    "temperature": 0.1,
                    "modelPreferences": {"intelligencePriority": 1.0, "costPriority": 0.2},
                    "tools": [
                        {
                            "name": "get_weather",
                            "description": "Weather of a city.",
                            "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
                        }
                    ],
                    "toolChoice": {"mode": "required"},
                }
            )
        dumped = answer.model_dump(by_alias=True, exclude_none=True)
        return _text(json.dumps({"stopReason": dumped.get("stopReason"), "content": dumped["content"]}))
    if params.name == "confirm":
        reply = (params.input_responses or {}).get("ask")
        if reply is None:
            request = types.ElicitRequest(
                params=types.ElicitRequestFormParams.model_validate(
                    {
                        "message": arguments["question"],
                        "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                    }
                )
            )
            return types.InputRequiredResult(input_requests={"ask": request})
        return _text(json.dumps(reply.model_dump(by_alias=True, exclude_none=True)))
    raise ValueError(f"unknown tool {params.name}")


POEM = types.Prompt(
    name="poem",
    description="A poem written by the client's model.",
    arguments=[types.PromptArgument(name="topic")],
)


async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=[POEM])


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> Any:
    answer = (params.input_responses or {}).get("llm")
    if answer is None:
        topic = (params.arguments or {}).get("topic", "the sea")
        return _sampling(
            {"messages": [{"role": "user", "content": {"type": "text", "text": topic}}], "maxTokens": 20}
        )
    content = answer.model_dump(by_alias=True, exclude_none=True)["content"]
    message = types.PromptMessage(role="user", content=types.TextContent(type="text", text=content["text"]))
    return types.GetPromptResult(messages=[message])


async def main() -> None:
    server: Server[Any] = Server(
        "modern",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
