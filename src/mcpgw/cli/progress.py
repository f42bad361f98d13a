"""Progress while commands wait on upstreams: one line per server as it comes up, on stderr.

Owns: what `tools`, `personas`, `list-servers --check`, `pin` and `add-server` show while
servers start. The lines go to stderr always (stdout keeps only the result, so `--json` and
pipes stay clean, and a log of a CI run still says which server was slow or failed); the
spinner naming the servers still starting is drawn only on a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import anyio
from rich.markup import escape
from rich.status import Status

from mcpgw.cli.output import err
from mcpgw.observe.logs import counted

_status: Status | None = None


class _Server(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def lists(self) -> Mapping[Any, list[Any]]: ...
    async def wait_settled(self) -> None: ...


def _label(names: Iterable[str]) -> str:
    waiting = list(names)
    shown = ", ".join(waiting[:4]) + (f" and {len(waiting) - 4} more" if len(waiting) > 4 else "")
    return f"starting {counted(len(waiting), 'server')}: {escape(shown)}"


@contextmanager
def starting(names: Iterable[str]) -> Iterator[None]:
    """The spinner (on a terminal) for as long as the block runs."""
    global _status
    names = list(names)
    if not err.is_terminal or not names:
        yield
        return
    with err.status(_label(names)) as status:
        _status = status
        try:
            yield
        finally:
            _status = None


async def follow(servers: Mapping[str, _Server]) -> None:
    """Print one line per server as its first start ends (ready or failed); return when all have."""
    began = anyio.current_time()
    pending = dict(servers)

    async def one(name: str, server: _Server) -> None:
        await server.wait_settled()
        del pending[name]
        took = anyio.current_time() - began
        err.print(line(name, server.state, server.error, len(server.lists.get("tools", [])), took))
        if _status is not None and pending:
            _status.update(_label(pending))

    async with anyio.create_task_group() as tg:
        for name, server in servers.items():
            tg.start_soon(one, name, server)


def line(name: str, state: str, error: str | None, tools: int, took: float) -> str:
    if state == "ready":
        return f"  [green]ready[/]  {escape(name)}: {counted(tools, 'tool')} ({took:.1f}s)"
    detail = f": {escape(error)}" if error else ""
    return f"  [red]{escape(state)}[/] {escape(name)} ({took:.1f}s){detail}"
