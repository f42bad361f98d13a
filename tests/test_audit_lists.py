"""Every list is audited, including those the listing cache answers (server/listcache.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlite_utils

from parity import TestUpstream, gateway_client, registry, served

pytestmark = pytest.mark.anyio


async def test_lists_answered_from_the_cache_have_rows_too(audit_db: Path) -> None:
    async with (
        served(registry(personas={"p": {}}), {"up": TestUpstream()}) as gateway,
        gateway_client(gateway) as client,
        gateway_client(gateway, persona="p") as other,
    ):
        for _ in range(3):
            await client.list_tools()
        await client.list_prompts()
        await client.list_prompts()
        await other.list_tools()
    db = sqlite_utils.Database(audit_db)
    rows = list(db.query("select persona, name, outcome from events where kind = 'list' order by id"))
    tools = [row for row in rows if row["name"] == "tools/list"]
    assert [row["persona"] for row in tools].count("p") == 1
    assert len(tools) == 4 and len([row for row in rows if row["name"] == "prompts/list"]) == 2
    assert {row["outcome"] for row in rows} == {"ok"}
