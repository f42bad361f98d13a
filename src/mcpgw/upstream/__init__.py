"""Upstream MCP servers: one supervised, shared session each, the transports that reach them,
their credentials, and the registry of calls in flight on each."""
