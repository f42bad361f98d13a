"""mcpgw: one governed MCP server in front of many."""
