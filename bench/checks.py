"""The CPU the two schema checks of a forwarded call take in the running lane (`bench/lane.py` or
`bench/httplane.py`): the client's params check and the upstream's result check (`mcpgw.shapes`,
`_compat.checked_result`), each timed with this thread's CPU clock around every call the bench makes.

    PYTHONPATH=src .venv/bin/python bench/checks.py                    # bench/lane.py (N=, AUDIT= as there)
    PYTHONPATH=src .venv/bin/python bench/checks.py bench/httplane.py

In place rather than in a loop of their own: a loop keeps the validators in the CPU's caches, which a
call's other work between two checks does not, so a loop shows a fraction of what a call pays. The
timing itself adds about 1 us to each figure. On a commit before `mcpgw.shapes`, the params check
timed is mcp_types' `methods.validate_client_request`, which the lanes called there.
"""

from __future__ import annotations

import atexit
import runpy
import sys
import time
from collections.abc import Callable
from typing import Any

from mcp_types import methods

from mcpgw import _compat

spent = {"params": [0, 0], "result": [0, 0]}


def timed(name: str, check: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time_ns()
        try:
            return check(*args, **kwargs)
        finally:
            spent[name][0] += time.thread_time_ns() - start
            spent[name][1] += 1

    return run


def report() -> None:
    each = {name: ns / max(count, 1) / 1000 for name, (ns, count) in spent.items()}
    print(
        f"checks per call: params {each['params']:.1f} us, result {each['result']:.1f} us, "
        f"both {sum(each.values()):.1f} us ({spent['params'][1]} calls)"
    )


try:
    from mcpgw import shapes

    shapes.validate_client_request = timed("params", shapes.validate_client_request)
except ImportError:  # a commit before it
    methods.validate_client_request = timed("params", methods.validate_client_request)
_compat.checked_result = timed("result", _compat.checked_result)
atexit.register(report)
bench = sys.argv[1] if len(sys.argv) > 1 else "bench/lane.py"
sys.argv = [bench]
runpy.run_path(bench, run_name="__main__")
