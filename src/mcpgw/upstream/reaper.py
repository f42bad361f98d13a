"""The reaper: a watchdog process that stops every stdio upstream's process group when the gateway dies.

Owns: starting the watchdog (once per gateway process, with the first stdio upstream), telling it
each process group as it is spawned (`watch`) and as it is stopped (`release`), and the watchdog's
own code. The watchdog holds the read end of a pipe whose only write end is the gateway's; however
the gateway ends, `kill -9` included, the kernel closes that end, and the watchdog SIGTERMs every
group still watched, then SIGKILLs what is left after `GRACE` seconds.

Why a watchdog and not `PR_SET_PDEATHSIG` in each child: the death signal reaches only the direct
child, so the grandchildren of `npx`, `uvx` or a shell wrapper would survive; it fires when the
*thread* that spawned the child exits, not the process; it needs `preexec_fn`, which `anyio.open_process`
does not offer and which is unsafe in a threaded process; and it is Linux only. `killpg` on the
groups (every upstream leads its own session) reaches every descendant that stayed in the group.
The watchdog leads its own session too, and ignores SIGINT, SIGTERM and SIGHUP: a client that kills
the gateway's whole group (the mcp SDK's stdio client does) must not take the watchdog with it.

Left open: a gateway killed between spawning a child and telling the watchdog (microseconds) leaves
that one child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading

logger = logging.getLogger("mcpgw.upstream")

GRACE = 2.0
"""Seconds the groups have after SIGTERM before SIGKILL, once the gateway is gone."""

_WATCHDOG = f"""
import os, signal, sys, time
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    try:
        op, pgid = line[:1], int(line[1:])
    except ValueError:
        continue
    if op == b"+":
        groups.add(pgid)
    elif op == b"-":
        groups.discard(pgid)
def signal_all(sig):
    for pgid in list(groups):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            groups.discard(pgid)
        except PermissionError:
            pass
signal_all(signal.SIGTERM)
deadline = time.monotonic() + {GRACE!r}
while groups and time.monotonic() < deadline:
    time.sleep(0.05)
    signal_all(0)
signal_all(signal.SIGKILL)
"""


class _Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = 0
        """The pid that started the watchdog: a forked copy of the gateway starts its own."""
        self._broken = False

    def _send(self, line: str) -> None:
        with self._lock:
            if self._broken:
                return
            if self._process is None or self._owner != os.getpid():
                self._process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _WATCHDOG],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self._owner = os.getpid()
            assert self._process.stdin is not None
            try:
                self._process.stdin.write(line.encode())
                self._process.stdin.flush()
            except OSError as exc:  # someone killed the watchdog: the gateway still stops its children
                self._broken = True
                logger.warning("the upstream watchdog is gone (%s): a killed gateway may leave children", exc)

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def release(self, pgid: int) -> None:
        with contextlib.suppress(Exception):
            self._send(f"-{pgid}\n")


_reaper = _Reaper()
watch = _reaper.watch
release = _reaper.release
