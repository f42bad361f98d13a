"""Load for the audit test: `load.py URL CLIENTS CALLS_EACH`; prints '<n> ok' when every call succeeded."""

from __future__ import annotations

import sys

import anyio
from mcp import Client


async def main(url: str, clients: int, each: int) -> None:
    done = 0

    async def client(index: int) -> None:
        nonlocal done
        async with Client(url, cache=None) as session:
            for i in range(each):
                result = await session.call_tool("up__echo", {"message": f"{index}-{i}"})
                assert result.content[0].text == f"{index}-{i}"  # type: ignore[union-attr]
                done += 1

    async with anyio.create_task_group() as tg:
        for index in range(clients):
            tg.start_soon(client, index)
    print(f"{done} ok")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
