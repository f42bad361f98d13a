"""The shipped Datasette metadata that makes an audit database a ready dashboard.

Owns: `datasette.json` (labels for every column, facets, and canned queries for sampling
spend and refusals) and `metadata`, which keys it by the name Datasette gives the database
(the file's name without its suffix), so `datasette audit.db -m FILE` finds it. The canned
queries read only this package's `events` table (`schema`).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

SHIPPED = "datasette.json"


def metadata(database: Path | str) -> dict[str, Any]:
    """The metadata for the audit database at `database` (only its name matters)."""
    text = resources.files("mcpgw.audit").joinpath(SHIPPED).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    data["databases"] = {Path(database).stem: data["databases"]["audit"]}
    return data


def queries() -> dict[str, str]:
    """Each canned query's SQL, by name (they take one parameter, `since`)."""
    shipped = metadata("audit")["databases"]["audit"]["queries"]
    return {name: query["sql"] for name, query in shipped.items()}
