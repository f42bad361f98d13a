"""In-process microbench of the audit log's CPU per row: rows built, and rows built and inserted.

Pushes N typical `tools/call` steps (small arguments, a ~200-byte text result, as a forwarded
`echo` leaves them; the same persona, client, session and server on every row) through an
`AuditLog` writing a temporary SQLite file, and prints this process's CPU per row (`process_time`,
which counts the writer thread too):

- built: `Rows.step` alone over the N steps, on this thread (redaction, escaping, bounds);
- written: `record_step` for each step and the writer thread building and inserting every row,
  from the first push to the last commit. Rows are pushed `BATCH` at a time (default 32, about
  what a batch interval gathers from sequential calls), each group waited for before the next
  is pushed; `BATCH=0` pushes all N at once (the writer's largest batches).

Three rounds each, on a file that already holds the rounds before (its indexes grow as a
gateway's do).

    PYTHONPATH=src .venv/bin/python bench/audit_rows.py              # N=20000 rows a round
    N=5000 BATCH=0 PYTHONPATH=src .venv/bin/python bench/audit_rows.py
    PROF=tottime PYTHONPATH=src .venv/bin/python bench/audit_rows.py  # cProfile of the last building

Run it on two commits back to back: the difference is what the change saved per row.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import tempfile
import threading
import time
from pathlib import Path

from mcpgw import audit

N = int(os.environ.get("N", "20000"))
BATCH = int(os.environ.get("BATCH", "32"))
PROF = os.environ.get("PROF")
RESULT = (
    "The quick brown fox jumps over the lazy dog; the gateway forwards this text as an upstream's "
    "echo gives it back, about two hundred bytes long, with nothing in it a redaction rule looks for."
)


def steps(n: int) -> list[audit.Step]:
    out = []
    for i in range(n):
        step = audit.Step(
            kind=audit.Kind.CALL,
            method="tools/call",
            persona="default",
            client="mcp",
            protocol="2025-11-25",
            session="5f0c6b1e2d3a4f5e8c9b0a1d2e3f4a5b",
        )
        step.server, step.name = "up", "up__echo"
        step.arguments = {"message": f"ping {i}"}
        step.result = RESULT
        out.append(step)
    return out


def built(log: audit.AuditLog, n: int, *, prof: str | None = None) -> float:
    batch = steps(n)
    build = log._rows.step if hasattr(log, "_rows") else log._row  # type: ignore[attr-defined]  # before rows.py
    profile = cProfile.Profile() if prof else None
    cpu = time.process_time()
    if profile is not None:
        profile.enable()
    for step in batch:
        build(step)
    if profile is not None and prof:
        profile.disable()
        pstats.Stats(profile).sort_stats(prof).print_stats(25)
    return (time.process_time() - cpu) / n


def written(log: audit.AuditLog, n: int) -> float:
    batch = steps(n)
    size = BATCH or n
    start = log.written
    cpu = time.process_time()
    for first in range(0, n, size):
        group = batch[first : first + size]
        for step in group[:-1]:
            log.record_step(step)
        # The group's last row is waited for as a refusal's would be: the writer takes the group
        # at once (no batch interval to sit out) and this thread sleeps until it is committed.
        committed = threading.Event()
        log._put(group[-1], durable=True, done=committed.set)
        committed.wait()
    assert log.written == start + n, (log.written, start, n)
    return (time.process_time() - cpu) / n


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = audit.AuditLog(Path(tmp) / "audit.db").start()
        written(log, 2000)  # warm-up: the redactor's caches, the file's first pages
        rounds_built = [built(log, N, prof=PROF if r == 2 else None) for r in range(3)]
        rounds_written = [written(log, N) for _ in range(3)]
        log.close()
        size = (Path(tmp) / "audit.db").stat().st_size
    shown = "all at once" if not BATCH else f"{BATCH} at a time"
    print(f"{N} rows a round, pushed {shown}; file {size / 1e6:.1f} MB at the end")
    print("built:   " + ", ".join(f"{t * 1e6:.1f}" for t in rounds_built) + " us CPU per row")
    print("written: " + ", ".join(f"{t * 1e6:.1f}" for t in rounds_written) + " us CPU per row")


if __name__ == "__main__":
    main()
