"""A peer for the benchmark: fastmcp's proxy (`fastmcp.server.create_proxy`) over the servers of an MCP
config file (`{"mcpServers": {...}}`), served over stdio as `fastmcp run` would.

    python bench/peer_fastmcp.py CONFIG.json [--http PORT]   # stdio, or streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastmcp.server import create_proxy

if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    proxy = create_proxy(config, name="fastmcp-proxy")
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        proxy.run(transport="http", host="127.0.0.1", port=port, show_banner=False)
    else:
        proxy.run(transport="stdio", show_banner=False)
