"""What every registry model shares: the strict base and the naming rules.

Owns: `Strict` (unknown keys rejected, models frozen) and the shapes of names that the
models check and the catalog relies on: server, namespace, tool and persona names.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

SEPARATOR = "__"
"""Joins a namespace and an upstream name: `github__create_issue`."""

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What Claude's and other clients' APIs accept as a tool name."""

SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*$")

DEFAULT_PERSONA = "default"
PERSONA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
