"""mcpgw as an MCP server.

The request handlers (`handlers`, with `notify` for what clients are told
besides results and `listcache` for list results), the transports (`stdio`,
`http`, both run by `lifecycle`; `envelope` for the errors they answer
themselves), and the HTTP-side guards (`auth` for the OAuth resource server,
`hostcheck` for Host/Origin checks, `resume` for resumable streams). `listening`
serves 2026-07-28 listen streams that name resources. `reload` follows the
registry file (and SIGHUP) under a serving gateway. `prestarted` takes a stdio connection over from
the pre-server (`mcpgw.prestart`) and saves the opening answers the next one gives.
"""
