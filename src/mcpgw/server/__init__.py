"""mcpgw as an MCP server: request handlers, change announcements, stdio and HTTP transports,
and the HTTP-side guards (OAuth resource server, Host/Origin checks, resumable streams)."""
