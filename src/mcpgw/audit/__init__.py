"""The audit log: every step a gateway takes, as one row of a table (local SQLite, or PostgreSQL).

The package's modules, one job each:

    step      the row's vocabulary (`Kind`, `Outcome`), the per-request `Step`, the current
              step (`current`, `note`) and `recording`, the one way a request becomes a row
    log       `AuditLog`: one writer thread, batches, the retry buffer, refusals and security
              events committed before their caller goes on
    rows      steps and events made rows: every column cleaned, in the table's column order
    fields    each text column made safe: redacted, control characters escaped, bounded
    fold      repeated refusals folded into one row per interval, with a count
    schema    where the database lives, the `events` table's columns and indexes
    store     the store interface the writer and readers share (`Store`, `Connection`), SQLite's
    postgres  the same table on PostgreSQL (`[audit] url`), imported only when configured
    queries   `mcpgw logs` and `mcpgw stats`: filtering, summaries, pruning, `printable`
    times     the times a reader may give (`1h`, `yesterday`, ISO, local or UTC), or an error
    spend     sampling spend per persona and route, and a persona's spend since a time
    dashboard the shipped Datasette metadata (labels, facets, canned queries)
    redact    what never reaches the file (secret keys, credential-shaped values, URL secrets)

Rows are built only here: writers hand over a `Step` or an event. This module re-exports
the public API.
"""

from __future__ import annotations

from mcpgw.audit.fields import SUMMARY_CHARS, shown
from mcpgw.audit.fold import Fold, Folds
from mcpgw.audit.log import BATCH_INTERVAL, AuditLog, durable, open_for
from mcpgw.audit.queries import STAT_GROUPS, open_for_reading, printable, prune, query, stats
from mcpgw.audit.schema import (
    COLUMNS,
    ENV_AUDIT_DB,
    INDEXES,
    SCHEMA_VERSION,
    default_path,
    ensure_schema,
    path_for,
)
from mcpgw.audit.step import (
    STAT_KINDS,
    Kind,
    Outcome,
    Recorder,
    Step,
    current,
    entered,
    left,
    note,
    now,
    recording,
)
from mcpgw.audit.store import Connection, SqliteStore, Store, StoreError, store_for

__all__ = [
    "BATCH_INTERVAL",
    "COLUMNS",
    "ENV_AUDIT_DB",
    "INDEXES",
    "SCHEMA_VERSION",
    "STAT_GROUPS",
    "STAT_KINDS",
    "SUMMARY_CHARS",
    "AuditLog",
    "Connection",
    "Fold",
    "Folds",
    "Kind",
    "Outcome",
    "Recorder",
    "SqliteStore",
    "Step",
    "Store",
    "StoreError",
    "current",
    "default_path",
    "durable",
    "ensure_schema",
    "entered",
    "left",
    "note",
    "now",
    "open_for",
    "open_for_reading",
    "path_for",
    "printable",
    "prune",
    "query",
    "recording",
    "shown",
    "stats",
    "store_for",
]
