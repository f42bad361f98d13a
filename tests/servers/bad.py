"""Misbehaving upstreams for the tests: `bad.py MODE`.

- exit:    exits at once with status 3
- garbage: writes non-JSON lines to stdout, then serves as the normal test upstream
- silent:  reads stdin and never answers
- noisy:   writes to stderr, then serves as the normal test upstream
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

mode = sys.argv[1]
if mode == "exit":
    print("fatal: this server exits at once", file=sys.stderr)
    sys.exit(3)
if mode == "silent":
    for _ in sys.stdin:
        pass
    time.sleep(3600)
if mode == "garbage":
    sys.stdout.write("this is not json\n{broken\n")
    sys.stdout.flush()
if mode in ("garbage", "noisy"):
    print("STDERR-MARKER from the noisy upstream", file=sys.stderr, flush=True)
    sys.path.insert(0, str(Path(__file__).parent))
    from upstream import build

    build("bad-" + mode).run(transport="stdio", show_banner=False)
