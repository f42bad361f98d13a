"""The `mcpgw` command: a thin layer over config, registry, gateway and server.

Owns: the command group and the one place a `GatewayError` becomes a message on
stderr plus its exit code. Each command group lives in its own module (`serve`,
`catalog`, `registry`, `pin`, `logs`), printing through `output`; they import
the server stack, fastmcp and litellm only inside commands, so `mcpgw --help`
and `--version` stay fast.
"""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from mcpgw.cli import catalog, logs, pin, registry, serve
from mcpgw.cli.output import err
from mcpgw.errors import GatewayError


class _GatewayFailure(click.ClickException):
    """A `GatewayError` as the CLI shows it: one line on stderr and the error's own exit code."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        err.print(f"[red]mcpgw: error:[/] {escape(self.message)}")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            raise _GatewayFailure(exc) from exc
        except BaseExceptionGroup as group:
            # An error raised inside the serving task groups arrives wrapped.
            matched: BaseException | None = group.split(GatewayError)[0]
            while isinstance(matched, BaseExceptionGroup):
                matched = matched.exceptions[0]
            if isinstance(matched, GatewayError):
                raise _GatewayFailure(matched) from group
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcpgw-gateway", prog_name="mcpgw")
def cli() -> None:
    """mcpgw: one governed MCP server in front of many."""


cli.add_command(serve.serve)
cli.add_command(catalog.tools)
cli.add_command(catalog.personas)
cli.add_command(catalog.list_servers)
cli.add_command(registry.add_server)
cli.add_command(registry.remove_server)
cli.add_command(registry.enable)
cli.add_command(registry.disable)
cli.add_command(registry.install)
cli.add_command(registry.import_)
cli.add_command(pin.pin)
cli.add_command(logs.logs)
cli.add_command(logs.stats)


def main(argv: list[str] | None = None) -> None:
    """Entry point; errors are shown once, by `_GatewayFailure`, with their exit code."""
    cli.main(args=argv, prog_name="mcpgw")


if __name__ == "__main__":
    main()
