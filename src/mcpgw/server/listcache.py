"""The listing cache: list results shaped for the wire once per catalog, protocol version and persona.

Owns: `ListingCache`, the server middleware that answers `tools/list`,
`resources/list`, `resources/templates/list` and `prompts/list` (first page)
from what it shaped before, until the gateway builds a new catalog; and putting
back, for 2026-07-28 clients, the tools' `execution` that the SDK's shaping drops.
A listing answered from the cache is audited like any other (`record`): the audit
log has a row for every list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcpgw.core.gateway import Gateway
from mcpgw.core.memory import wait_listable

Ctx = ServerRequestContext[Any, Any]


class ListingCache:
    """Server middleware: each list result is shaped for the wire once per catalog and protocol version.

    The SDK re-validates and re-serialises every result against the negotiated
    version; for a 500-tool catalog that was ~18 ms of CPU per `tools/list`.
    The catalog is immutable, so its shaped listing can be reused until the
    gateway builds a new one. A middleware that returns without `call_next`
    owns its result, envelope included, which is exactly what is cached.
    """

    METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
    lean_methods: frozenset[str] = frozenset()
    """The forwarded requests the lanes run chains for (`fastlane.Chains`) are no listings: this is
    left out of their chains."""

    def __init__(
        self,
        gateway: Gateway,
        persona_of: Callable[[Ctx], str | None],
        *,
        record: Callable[[Ctx, Callable[[], Awaitable[dict[str, Any]]]], Awaitable[dict[str, Any]]],
    ) -> None:
        self._gateway = gateway
        self._persona_of = persona_of
        self._record = record
        """Serves a cached listing as an audit step, as the list handlers do when there is no cache."""
        self._catalog: object = None
        self._shaped: dict[tuple[str, str, str | None], dict[str, Any]] = {}

    async def __call__(self, ctx: Ctx, call_next: Callable[[Ctx], Awaitable[Any]]) -> Any:
        if ctx.method not in self.METHODS or (ctx.params or {}).get("cursor"):
            return self._with_execution(ctx, await call_next(ctx))
        await wait_listable(self._gateway)
        catalog = self._gateway.catalog
        if catalog is not self._catalog:
            self._catalog, self._shaped = catalog, {}
        key = (ctx.method, ctx.protocol_version, self._persona_of(ctx))
        cached = self._shaped.get(key)
        if cached is None:
            cached = self._with_execution(ctx, await call_next(ctx))  # the list handler records this one
            if self._gateway.catalog is catalog and isinstance(cached, dict):
                self._shaped[key] = cached
            return cached
        shaped = cached

        async def answer() -> dict[str, Any]:
            return shaped

        return await self._record(ctx, answer)

    def _with_execution(self, ctx: Ctx, shaped: Any) -> Any:
        """A 2026-07-28 `tools/list` with each tool's `execution` as its upstream declared it.

        Why here: the SDK shapes results by the 2026-07-28 schema, which has no `Tool.execution`
        (tasks left the core), so a 2026 client lost what a handshake-era upstream (or a 2026 one
        that still sends it) declares, and what the same client sees when it connects directly
        and falls back to the handshake. A field a client does not know is ignored by it.
        """
        if (
            ctx.method != "tools/list"
            or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS
            or not isinstance(shaped, dict)
            or not isinstance(shaped.get("tools"), list)
        ):
            return shaped
        declared = {
            tool["name"]: tool["execution"]
            for tool in self._gateway.view(self._persona_of(ctx)).listed_tools
            if "execution" in tool
        }
        if not declared:
            return shaped
        tools = [
            {**tool, "execution": declared[tool["name"]]}
            if isinstance(tool, dict) and tool.get("name") in declared
            else tool
            for tool in shaped["tools"]
        ]
        return {**shaped, "tools": tools}
