"""mcpgw: one governed MCP server in front of many."""


def version() -> str:
    """The installed version of mcpgw (distribution `mcpgw-gateway`)."""
    # Imported here: importlib.metadata costs tens of ms, and `mcpgw --help` imports this package.
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("mcpgw-gateway")
    except PackageNotFoundError:
        return "0"
