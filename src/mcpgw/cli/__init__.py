"""The `mcpgw` command: a thin layer over config, registry, gateway and server.

Owns: the command group, which loads each command's module only when that command runs
(`mcpgw --help` and `--version` import none of them, nor pydantic, the mcp SDK, fastmcp or
litellm: a test checks, and bench/ times them), and the one place a `GatewayError` becomes a
message on stderr plus its exit code. Each command group lives in its own module (`serve`,
`catalog`, `personas`, `registry`, `clients`, `pin`, `logs`, `login`, `admin`), printing through `output`.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

COMMANDS: dict[str, tuple[str, str, str]] = {
    "admin": (
        "admin",
        "admin",
        "Serve the web console (servers, personas, traffic, spend, pins) for a registry served over stdio.",
    ),
    "add-server": (
        "registry",
        "add_server",
        "Add a server: `add-server NAME -- COMMAND ARGS...`, `--url URL` or `--openapi SPEC`.",
    ),
    "disable": ("registry", "disable", "Disable a server (kept in the file, not started)."),
    "enable": ("registry", "enable", "Enable a server."),
    "import": (
        "clients",
        "import_",
        "Add a client's servers to the registry (secrets moved to the secrets file).",
    ),
    "install": (
        "clients",
        "install",
        "Put mcpgw into a client's configuration (printed, or written with --write).",
    ),
    "list-servers": ("catalog", "list_servers", "List the servers in the registry."),
    "login": (
        "login",
        "login",
        "Log in to an OAuth-protected URL server (discovery, registration, browser, tokens stored).",
    ),
    "logout": ("login", "logout", "Revoke and forget the tokens of `mcpgw login SERVER`."),
    "logs": ("logs", "logs", "The audit log, newest first (oldest first with --follow or --session)."),
    "personas": (
        "personas",
        "personas",
        "Start every server and list the personas with what each one sees (or draft or explain one).",
    ),
    "pin": (
        "pin",
        "pin",
        "Pin the tool, prompt and resource-template definitions of SERVER (or every server) "
        "in the lock file.",
    ),
    "remove-server": ("registry", "remove_server", "Remove a server from the registry."),
    "serve": (
        "serve",
        "serve",
        "Serve the merged catalog over stdio (for Claude Desktop, IDEs) or streamable HTTP.",
    ),
    "stats": (
        "logs",
        "stats",
        "Calls, errors, p50/p95 ms per persona, server, tool, principal; sampling spend per persona, route.",
    ),
    "tools": (
        "catalog",
        "tools",
        "Start every server and print the merged tool catalog (or a persona's view of it).",
    ),
}
"""Command -> (module in `mcpgw.cli`, attribute, its help's first sentence, which `--help` lists
without importing the module (click's own listing imports every command); a test keeps each equal
to the command's own)."""


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(f"mcpgw.cli.{module}"), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        from mcpgw.errors import GatewayError

        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            raise _failure(exc) from exc
        except BaseExceptionGroup as group:
            # An error raised inside the serving task groups arrives wrapped.
            matched: BaseException | None = group.split(GatewayError)[0]
            while isinstance(matched, BaseExceptionGroup):
                matched = matched.exceptions[0]
            if isinstance(matched, GatewayError):
                raise _failure(matched) from group
            raise


def _failure(error: Exception) -> click.ClickException:
    """A `GatewayError` as the CLI shows it: one line on stderr and the error's own exit code."""
    return _GatewayFailure(str(error), getattr(error, "exit_code", 1))


class _GatewayFailure(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        from rich.markup import escape

        from mcpgw.cli.output import err

        err.print(f"[red]mcpgw: error:[/] {escape(self.message)}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcpgw-gateway", prog_name="mcpgw")
def cli() -> None:
    """mcpgw: one governed MCP server in front of many."""


def main(argv: list[str] | None = None) -> None:
    """Entry point; errors are shown once, by `_GatewayFailure`, with their exit code."""
    import sys

    if argv is None and sys.argv[1:2] == ["serve"]:  # a stdio `serve` may answer before importing
        from mcpgw.prestart.preserver import begin

        begin(sys.argv[1:])
    cli.main(args=argv, prog_name="mcpgw")


if __name__ == "__main__":
    main()
