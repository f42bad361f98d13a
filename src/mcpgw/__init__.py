"""mcpgw: one governed MCP server in front of many."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version


def version() -> str:
    """The installed version of mcpgw (distribution `mcpgw-gateway`)."""
    try:
        return _dist_version("mcpgw-gateway")
    except PackageNotFoundError:
        return "0"
