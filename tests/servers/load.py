"""Load from many clients: `load.py URL CLIENTS CALLS_EACH [--tool NAME] [--tolerate-errors]`.

Prints '<n> ok' when every call succeeded. With `--tolerate-errors`, a call that
fails with an MCP error still counts as answered; it prints
'<answered> answered <ok> ok <errors> errors' (a call with no answer hangs, and the test's timeout says so).
"""

from __future__ import annotations

import argparse

import anyio
from mcp import Client
from mcp.shared.exceptions import MCPError


async def main(url: str, clients: int, each: int, tool: str, tolerate: bool) -> None:
    ok = errors = 0

    async def client(index: int) -> None:
        nonlocal ok, errors
        async with Client(url, cache=None) as session:
            for i in range(each):
                try:
                    result = await session.call_tool(tool, {"message": f"{index}-{i}"})
                except MCPError:
                    if not tolerate:
                        raise
                    errors += 1
                    continue
                if result.is_error and tolerate:
                    errors += 1
                    continue
                assert result.content[0].text == f"{index}-{i}"  # type: ignore[union-attr]
                ok += 1

    async with anyio.create_task_group() as tg:
        for index in range(clients):
            tg.start_soon(client, index)
    if tolerate:
        print(f"{ok + errors} answered {ok} ok {errors} errors")
    else:
        print(f"{ok} ok")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("clients", type=int)
    parser.add_argument("each", type=int)
    parser.add_argument("--tool", default="up__echo")
    parser.add_argument("--tolerate-errors", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args.url, args.clients, args.each, args.tool, args.tolerate_errors)
