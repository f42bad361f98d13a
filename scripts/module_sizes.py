"""Fail when a module under a package is longer than the limit: each should read in one sitting.

Usage: python scripts/module_sizes.py SRC_DIR MAX_LINES
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(root: str, limit: str) -> int:
    too_long = [
        (path, count)
        for path in sorted(Path(root).rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > int(limit)
    ]
    for path, count in too_long:
        print(f"{path}: {count} lines (over {limit}): split it by concept")
    return 1 if too_long else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
