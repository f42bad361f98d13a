"""`[admin]`: the web console at `/admin` (and `mcpgw admin`).

Owns: whether the console is served and which OAuth scope a token needs to use it when
`[auth]` is configured. Who may reach it without `[auth]` (loopback only, never in production
mode) is the console's own rule (`server.console.access`), not a setting.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mcpgw.config.base import Strict


class AdminSettings(Strict):
    """`[admin]`."""

    enabled: bool = True
    """False: no `/admin` routes at all (404), and `mcpgw admin` refuses to start."""
    scope: Annotated[str, Field(min_length=1, pattern=r"^\S+$")] = "mcpgw:admin"
    """With `[auth]`: the scope a token needs, besides `[auth] required_scopes`, to use the console."""
    session_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 60.0
    """The longest a browser session (a cookie got by presenting a token) lasts; never past the
    token's own expiry."""
