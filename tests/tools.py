"""The Node and Python tools the tests start, installed into `.tools/` before the suite runs.

`scripts/check` runs this beside the format, lint and type checks (which use one core), so on a
fresh machine the npm and pip installs overlap them instead of holding a test worker: measured
here, a fresh clone's tests took 5 min 33 s with the installs inside them, against 4 min 48 s with
the tools already there. The installs are the fixtures' own (`conftest._npm_install`, `pip_install`,
with the same markers and locks), so a tool installed here is not installed again, and a test run
without this still installs what it needs.

    .venv/bin/python tests/tools.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest
import test_audit_dashboard
import test_probe_fallback
import test_reference_servers

TOOLS: dict[str, Callable[[], Any]] = {
    **{name: partial(conftest.npm_tool, name) for name in conftest.NPM_TOOLS},
    "reference servers (npm)": test_reference_servers.npm_servers,
    "reference servers (PyPI)": test_reference_servers.pypi_servers,
    "mcp-server-sqlite": test_probe_fallback.sqlite_environment,
    "datasette": test_audit_dashboard.datasette,
}
"""Each installed the very way its fixture or test installs it (the same function)."""


def main() -> int:
    started = time.monotonic()
    failed = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(install) for name, install in TOOLS.items()}
        for name, future in futures.items():
            try:
                future.result()
            except (Exception, pytest.fail.Exception) as exc:  # its test installs it again, and says why
                failed.append(name)
                print(f"tests/tools.py: {name} not installed: {exc}", file=sys.stderr)
    ready, took = len(TOOLS) - len(failed), time.monotonic() - started
    print(f"tests/tools.py: {ready} of {len(TOOLS)} tools ready in {took:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
