"""Every channel from an upstream to a client, and to the audit log, passes the same data rules.

A hostile upstream (in process, tests/parity.py) puts a secret, chosen at random, in one channel at a
time: a tool result, its structured content, its `_meta`, an error reply, a progress message, a log
line, a completion value, a resource read, a prompt. Under `redact` and under `block`, nothing of the
secret reaches the client or the audit database.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError

from parity import gateway_client, registry, served

SECRETS = {
    "aws-key": "AKIAIOSFODNN7EXAMPLE",
    "github-token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "card": "4111 1111 1111 1111",
    "private-key": (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcN\n-----END RSA PRIVATE KEY-----"
    ),
}
CHANNELS = ["result", "structured", "meta", "error", "progress", "log", "completion", "read", "prompt"]


def leaky(channel: str, secret: str) -> MCPServer:
    """An upstream whose every answer carries `secret` in `channel` (and only there)."""
    mcp = MCPServer("leaky")

    @mcp.tool()
    async def leak(ctx: Context) -> Any:
        """Answer, leaking on the chosen channel."""
        if channel == "progress":
            await ctx.report_progress(1, 2, f"working on {secret}")
        if channel == "log":
            await ctx.info(f"token is {secret}")
        if channel == "error":
            raise MCPError(code=-32603, message=f"failed for {secret}", data={"detail": secret})
        text = secret if channel == "result" else "fine"
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content={"nested": [{"value": secret}]} if channel == "structured" else None,
            _meta={"deep": {"leak": secret}} if channel == "meta" else None,
        )

    @mcp.resource("leaky://doc", mime_type="text/plain")
    async def doc() -> str:
        """A document."""
        return f"the doc: {secret}" if channel == "read" else "the doc"

    @mcp.prompt()
    async def brief(topic: str) -> str:
        """A prompt."""
        return f"brief {secret}" if channel == "prompt" else f"brief {topic}"

    @mcp.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> types.Completion:
        return types.Completion(values=[f"t {secret}" if channel == "completion" else "t"])

    return mcp


def reached(channel: str, secret: str, action: str, db: Path) -> list[str]:
    """Everything the client received and the audit log stored, as text."""
    seen: list[str] = []
    rules = [{"detectors": sorted(SECRETS), "directions": ["results"], "action": action}]
    config = registry({"up": {"era": "handshake"}}, security={"rules": rules}, audit={"path": str(db)})

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        seen.append(json.dumps(params.model_dump(mode="json")))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(str(message))

    async def run() -> None:
        async with (
            served(config, {"up": leaky(channel, secret)}) as gateway,
            gateway_client(gateway, mode="legacy", logging_callback=on_log, log_level="debug") as client,
        ):
            calls = [
                client.call_tool("up__leak", {}, progress_callback=on_progress),
                client.read_resource("mcpgw://up/leaky://doc"),
                client.get_prompt("up__brief", {"topic": "x"}),
                client.complete(
                    types.PromptReference(type="ref/prompt", name="up__brief"),
                    {"name": "topic", "value": "t"},
                ),
            ]
            for call in calls:
                try:
                    seen.append(json.dumps((await call).model_dump(mode="json")))
                except MCPError as exc:
                    seen.append(json.dumps(exc.error.model_dump(mode="json")))
            await client.send_ping()  # notifications sent before the results have arrived by now

    anyio.run(run)
    with sqlite3.connect(db) as conn:
        seen.extend(json.dumps(row) for row in conn.execute("select * from events"))
    return seen


def normalised(texts: list[str]) -> str:
    """All of it as one text, JSON escapes undone (a private key's newlines are `\\n` in JSON)."""
    return "\n".join(texts).replace("\\n", "\n")


@settings(
    max_examples=18,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.sampled_from(CHANNELS), st.sampled_from(sorted(SECRETS)), st.sampled_from(["redact", "block"]))
def test_no_secret_reaches_the_client_or_the_audit_log_on_any_channel(
    tmp_path_factory: pytest.TempPathFactory, channel: str, detector: str, action: str
) -> None:
    db = tmp_path_factory.mktemp("audit") / "audit.db"
    everything = normalised(reached(channel, SECRETS[detector], action, db))
    assert SECRETS[detector] not in everything, (channel, detector, action)
    if action == "redact" and channel not in ("progress", "log"):
        assert f"[REDACTED:{detector}]" in everything, (channel, detector)


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_channel_is_redacted(tmp_path: Path, channel: str) -> None:
    """The same, for each channel once with a fixed secret: the property test samples them."""
    everything = normalised(reached(channel, SECRETS["aws-key"], "redact", tmp_path / "audit.db"))
    assert SECRETS["aws-key"] not in everything
    assert "[REDACTED:aws-key]" in everything
