"""Requests an upstream sends mcpgw: `roots/list`, `sampling/createMessage` and `elicitation/create`.

Owns: what mcpgw declares to an upstream it can answer (roots when the
registry gives it some; sampling and elicitation when the gateway handles them
for that server; the MCP Apps extension unless the server's `apps = false`),
the session callbacks that answer, and turning a handler's
failure into a JSON-RPC error for the upstream rather than an exception in the
session's receive loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import mcp_types as types
from mcp.client.session import ElicitationFnT, ListRootsFnT, SamplingFnT
from mcp.server import apps
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcpgw.errors import GatewayError

SamplingAnswer = Callable[
    [str, dict[str, Any]], Awaitable[types.CreateMessageResult | types.CreateMessageResultWithTools]
]
"""Answers an upstream's `sampling/createMessage` (server name, raw params), shaped for the upstream."""
ElicitationAnswer = Callable[[str, dict[str, Any]], Awaitable[types.ElicitResult]]
"""Answers an upstream's `elicitation/create` (server name, raw params)."""
R = TypeVar("R")

APPS_EXTENSION: dict[str, dict[str, Any]] = {apps.EXTENSION_ID: {"mimeTypes": [apps.APP_MIME_TYPE]}}
"""What mcpgw declares of MCP Apps to an upstream: it carries `ui://` resources and their MIME type."""

_SAMPLING_CAPABILITY = types.SamplingCapability(
    context=types.SamplingContextCapability(), tools=types.SamplingToolsCapability()
)


def as_uri(root: str) -> str:
    if "://" in root:
        return root
    return Path(root).expanduser().resolve().as_uri()


class Answers:
    """The answers one upstream gets to the requests it sends mcpgw."""

    def __init__(
        self,
        name: str,
        *,
        roots: list[str],
        on_sampling: SamplingAnswer | None = None,
        on_elicitation: ElicitationAnswer | None = None,
        apps: bool = False,
    ) -> None:
        self.name = name
        self.roots = roots
        self.apps = apps
        """Declare the MCP Apps extension on the session (the server's `apps` option)."""
        self.on_sampling = on_sampling
        """Answers the upstream's `sampling/createMessage`; when set, mcpgw declares sampling to it."""
        self.on_elicitation = on_elicitation
        """Answers the upstream's `elicitation/create`; when set, mcpgw declares elicitation to it."""

    # What the `ClientSession` is given: None declares nothing.

    @property
    def list_roots_callback(self) -> ListRootsFnT | None:
        return cast(ListRootsFnT, self._list_roots) if self.roots else None

    @property
    def sampling_callback(self) -> SamplingFnT | None:
        return self._sample if self.on_sampling is not None else None

    @property
    def elicitation_callback(self) -> ElicitationFnT | None:
        return self._elicit if self.on_elicitation is not None else None

    @property
    def extensions(self) -> dict[str, dict[str, Any]] | None:
        return APPS_EXTENSION if self.apps else None

    @property
    def sampling_capabilities(self) -> types.SamplingCapability | None:
        return _SAMPLING_CAPABILITY if self.on_sampling is not None else None

    async def _list_roots(self, ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(
            roots=[types.Root.model_validate({"uri": as_uri(r)}) for r in self.roots]
        )

    async def _sample(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        assert self.on_sampling is not None
        return await self._answer(self.on_sampling, params)

    async def _elicit(
        self, context: Any, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        assert self.on_elicitation is not None
        return await self._answer(self.on_elicitation, params)

    async def _answer(
        self, answer: Callable[[str, dict[str, Any]], Awaitable[R]], params: Any
    ) -> R | types.ErrorData:
        """Run a handler for a request the upstream sent us; its failures become JSON-RPC errors for it."""
        try:
            return await answer(self.name, params.model_dump(by_alias=True, exclude_none=True, mode="json"))
        except GatewayError as exc:
            return types.ErrorData(code=exc.jsonrpc_code, message=str(exc))
        except MCPError as exc:  # the client we relayed to refused
            return exc.error
        except ValidationError as exc:
            return types.ErrorData(
                code=types.INTERNAL_ERROR, message=f"invalid answer: {exc.error_count()} problems"
            )
