"""A stand-in LLM provider for the sampling tests: OpenAI-compatible `/v1/chat/completions` on 127.0.0.1.

The only stand-in the tests use (no model is reachable from the test machines):
litellm's real HTTP path runs against it. What it does is chosen by the
requested model name, so one server serves every route of a test registry:

- `fail-500...`  answers HTTP 500;
- `flaky-S-N...`  answers HTTP S to the first N requests for this model name, then answers;
- `stall...`     waits 4 s before answering (longer than the tests' timeouts);
- `tools...`     answers with a tool call to the first tool offered;
- `scripted...`  answers with the text a test set for this model name (`PUT /answers`);
- anything else  answers `stand-in answer from <model>: <last user text>`.

Every request is recorded; `GET /requests` lists them, `DELETE /requests`
forgets them, so tests can assert what reached the model, or that nothing did.
`PUT /answers` with `{"model": ..., "text": ...}` sets what a `scripted...` model says.

    python tests/servers/llm.py PORT
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RECORDED: list[dict[str, Any]] = []
FAILED: dict[str, int] = {}
"""Failures served so far per `flaky-S-N` model name."""
ANSWERS: dict[str, str] = {}
"""What each `scripted...` model name answers."""
FLAKY = re.compile(r"flaky-(\d{3})-(\d+)")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


async def completions(request: Request) -> JSONResponse:
    body = await request.json()
    RECORDED.append(body)
    model = str(body.get("model", ""))
    if model.startswith("fail-500"):
        return JSONResponse(
            {"error": {"message": "stand-in failure", "type": "server_error"}}, status_code=500
        )
    flaky = FLAKY.match(model)
    if flaky and FAILED.get(model, 0) < int(flaky[2]):
        FAILED[model] = FAILED.get(model, 0) + 1
        return JSONResponse(
            {"error": {"message": f"stand-in flaky failure {FAILED[model]}", "type": "server_error"}},
            status_code=int(flaky[1]),
        )
    if model.startswith("stall"):
        await anyio.sleep(4)
    messages = body.get("messages") or []
    prompt_tokens = sum(len(json.dumps(m)) // 4 for m in messages)
    message: dict[str, Any]
    if model.startswith("tools") and body.get("tools"):
        tool = body["tools"][0]["function"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": json.dumps({"city": "Paris"})},
                }
            ],
        }
        finish = "tool_calls"
    elif model.startswith("scripted"):
        message = {"role": "assistant", "content": ANSWERS.get(model, "")}
        finish = "stop"
    else:
        message = {
            "role": "assistant",
            "content": f"stand-in answer from {model}: {_last_user_text(messages)}",
        }
        finish = "stop"
    return JSONResponse(
        {
            "id": f"chatcmpl-{len(RECORDED)}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 7,
                "total_tokens": prompt_tokens + 7,
            },
        }
    )


async def requests(request: Request) -> JSONResponse:
    if request.method == "DELETE":
        RECORDED.clear()
    return JSONResponse(RECORDED)


async def answers(request: Request) -> JSONResponse:
    body = await request.json()
    ANSWERS[str(body["model"])] = str(body["text"])
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/answers", answers, methods=["PUT"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/chat/completions", completions, methods=["POST"]),
        Route("/requests", requests, methods=["GET", "DELETE"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
