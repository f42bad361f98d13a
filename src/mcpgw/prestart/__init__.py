"""Instant start over stdio: the opening answers a gateway gives before the mcp SDK is imported.

`answers` keeps what a full gateway answered to the opening requests (`initialize`,
`server/discover`, the lists), keyed by a digest of everything those answers depend on;
`preserver` answers from it while the rest of the gateway is imported and built, and hands the
lines it read to the full server (`server.prestarted`). Standard library only, imported first.
"""
