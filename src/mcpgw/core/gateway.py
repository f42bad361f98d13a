"""The gateway: its upstreams, its current catalog, and forwarding requests to them.

Owns: starting every enabled upstream at once, rebuilding the catalog when an
upstream becomes ready, fails, or says its lists changed, telling listeners
(the server's transports) what changed, and the forwarding of calls, reads,
prompt gets and completions with their arguments, `_meta` and progress.
Transport concerns (stdio, HTTP, eras on the wire) belong to `server`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from mcp_types import LOG_LEVEL_META_KEY

from mcpgw import audit
from mcpgw import catalog as catalog_mod
from mcpgw.audit import AuditLog
from mcpgw.bridge.exchange import Exchange
from mcpgw.catalog import Catalog, Problem, Route
from mcpgw.catalog import personas as personas_mod
from mcpgw.catalog.personas import View
from mcpgw.config import DEFAULT_PERSONA, Registry, namespace_of
from mcpgw.core.watch import ResourceWatch, Subscriber
from mcpgw.errors import InvalidRequest, NotFound, Unavailable
from mcpgw.sampling import Caller, ClientChannel, Sampler
from mcpgw.security.dataguard import Guard
from mcpgw.upstream.inflight import InFlight
from mcpgw.upstream.logrelay import LogRelay, LogSink
from mcpgw.upstream.session import Hooks, ListKind, ProgressRelay, Upstream, forwardable_meta
from mcpgw.upstream.session import for_server as upstream_for

if TYPE_CHECKING:
    from mcpgw.security.trust import Trust

logger = logging.getLogger("mcpgw.gateway")

T = TypeVar("T")
STOP_GRACE = 5.0

ChangeListener = Callable[[set[str]], Awaitable[None]]
"""Called with the changed list names: a subset of {"tools", "resources", "prompts"}."""

_LIST_OF: dict[ListKind, str] = {
    "tools": "tools",
    "resources": "resources",
    "resource_templates": "resources",
    "prompts": "prompts",
}


class Gateway:
    """The running gateway: its upstreams, its catalog, and every request forwarded to them.

    Built by `mcpgw.assembly.build_gateway`, which hands it what it uses: the audit log, the data
    rules (`guard`) and the pin/poisoning policy (`trust`). Nothing is attached afterwards.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        audit: AuditLog | None = None,
        guard: Guard | None = None,
        trust: Trust | None = None,
        secrets: Mapping[str, str] | None = None,
        in_process: Mapping[str, Any] | None = None,
    ) -> None:
        self.registry = registry
        self.audit = audit
        self.guard = guard
        """Data rules on arguments and results (`dataguard`); None when there are none."""
        self.trust = trust
        """Applied to every catalog built (pinned definitions, poisoning checks: see `trust.Trust`)."""
        self.upstreams: dict[str, Upstream] = {}
        self.inflight = InFlight()
        """The calls in flight per upstream: log lines and sampling requests are attributed from it."""
        self.logs = LogRelay(self.inflight)
        self.watch = ResourceWatch()
        self._namespaces: list[tuple[str, Upstream]] = []
        self.sampler = Sampler(
            registry, audit=audit, guard=guard, inflight=self.inflight, upstreams=self.upstreams
        )
        for name, server in registry.enabled_servers().items():
            hooks = Hooks(
                on_change=self._upstream_changed,
                on_state=self._upstream_state,
                on_log=self.logs.deliver,
                on_resource_updated=self._resource_updated,
                on_sampling=self.sampler.on_sampling if self.sampler.answers_sampling(name) else None,
                on_elicitation=self.sampler.on_elicitation
                if self.sampler.answers_elicitation(name)
                else None,
            )
            upstream = upstream_for(
                name, server, registry, secrets=secrets, hooks=hooks, in_process=(in_process or {}).get(name)
            )
            self.upstreams[name] = upstream
            self._namespaces.append((namespace_of(name, server), upstream))
        self.catalog: Catalog = catalog_mod.build(self._namespaces)
        self._listeners: list[ChangeListener] = []
        self._started = anyio.Event()
        self._reported: set[Problem] = set()
        self._views_of: Catalog | None = None
        self._views: dict[str | None, View] = {}
        self._in_flight = 0
        self._idle = anyio.Event()
        self.draining = False
        self._tasks: anyio.abc.TaskGroup | None = None
        """The gateway's own tasks: calls that outlive one downstream request (`bridge.Exchange`)."""

    # --- lifecycle -------------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Start every upstream in parallel; stop them all on exit, however it happens."""
        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                tg.start_soon(upstream.run)
            tg.start_soon(self._watch_startup)
            if self.trust is not None and self.trust.reporting:
                tg.start_soon(self.trust.watch, self.refresh)
            self._tasks = tg
            try:
                yield self
            finally:
                for upstream in self.upstreams.values():
                    upstream.stop()
                # One still starting (or restarting) would hold shutdown up to its start-up timeout;
                # the stdio transport's own shutdown is shielded, so its child is still stopped.
                with anyio.move_on_after(STOP_GRACE):
                    while any(u.connected for u in self.upstreams.values()):
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()

    async def drain(self, grace: float) -> int:
        """Refuse new requests, wait up to `grace` seconds for those in flight; return how many are left."""
        self.draining = True
        if self._in_flight:
            logger.info("draining %d in-flight request(s), up to %gs", self._in_flight, grace)
            with anyio.move_on_after(grace):
                await self._idle.wait()
        return self._in_flight

    @asynccontextmanager
    async def _tracked(self) -> AsyncIterator[None]:
        if self.draining:
            raise Unavailable("mcpgw is shutting down and takes no new requests")
        if self._in_flight == 0:
            self._idle = anyio.Event()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def _upstream_state(self, upstream: Upstream) -> None:
        if self.audit is not None:
            outcome = "ok" if upstream.state in ("ready", "stopped") else "error"
            self.audit.event(
                "upstream",
                server=upstream.name,
                name=upstream.state,
                outcome=outcome,
                error=upstream.error if outcome == "error" else None,
            )

    async def _watch_startup(self) -> None:
        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                tg.start_soon(upstream.wait_settled)
        self._rebuild()
        self._started.set()

    async def wait_started(self) -> None:
        """Wait until every upstream is ready or has failed (each is bounded by its start-up timeout)."""
        await self._started.wait()

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _rebuild(self) -> Catalog:
        catalog = catalog_mod.build(self._namespaces)
        self.catalog = self.trust.apply(catalog) if self.trust is not None else catalog
        for problem in self.catalog.problems:
            if problem not in self._reported:
                self._reported.add(problem)
                logger.warning("catalog: %s", problem)
        return self.catalog

    async def refresh(self) -> None:
        """Rebuild the catalog now (e.g. the lock file changed) and announce what changed."""
        await self._upstream_changed(None, ("tools", "resources", "resource_templates", "prompts"))

    async def _upstream_changed(self, upstream: Upstream | None, kinds: tuple[ListKind, ...]) -> None:
        before = self.catalog
        after = self._rebuild()
        if not self._started.is_set():
            return  # nobody has listed yet: nothing to announce
        changed = {_LIST_OF[kind] for kind in kinds if getattr(before, kind) != getattr(after, kind)}
        for listener in list(self._listeners):
            try:
                await listener(changed)
            except Exception:
                logger.exception("announcing a catalog change failed")

    # --- personas --------------------------------------------------------------------------------

    def resolve_persona(self, persona: str | None) -> str | None:
        """The persona a request gets: the one chosen, else `default` if configured, else none."""
        return personas_mod.resolve(self.registry, persona)

    def view(self, persona: str | None) -> View:
        """The persona's view of the current catalog, built once per catalog."""
        name = self.resolve_persona(persona)
        catalog = self.catalog
        if catalog is not self._views_of:
            self._views_of, self._views = catalog, {}
        view = self._views.get(name)
        if view is None:
            if name is None:
                view = personas_mod.full_view(catalog)
            else:
                view = personas_mod.build_view(name, self.registry.personas[name], catalog, self.registry)
            self._views[name] = view
        return view

    def check_personas(self) -> list[str]:
        """Build every persona's view now; warnings are returned, a broken override raises `ConfigError`."""
        warnings: list[str] = []
        for name in self.registry.personas:
            warnings.extend(self.view(name).warnings)
        if self.registry.personas and DEFAULT_PERSONA not in self.registry.personas:
            warnings.append(
                "personas are configured but none is named 'default': "
                "clients that choose no persona see the whole catalog"
            )
        return warnings

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """A tool's listed input schema by any exposed name (full catalog first, then personas)."""
        schema = self.catalog.input_schema(name)
        if schema is None:
            for view in list(self._views.values()):
                schema = view.input_schema(name)
                if schema is not None:
                    break
        return schema

    async def _resolve(
        self,
        persona: str | None,
        lookup: Callable[[View], T],
        *,
        withheld: Callable[[Catalog], bool] | None = None,
    ) -> tuple[View, T]:
        """Look a name up in the persona's view; while upstreams are still starting, wait and retry.

        A name the full catalog has but the view hides is recorded as `denied` in the audit log,
        one the security policy withholds (`withheld(catalog)`, see `trust`) as `withheld`;
        the client gets the same error either way.
        """
        try:
            view = self.view(persona)
            return view, lookup(view)
        except NotFound:
            if self._started.is_set():
                self._note_denied(lookup, withheld)
                raise
        await self.wait_started()
        view = self.view(persona)
        try:
            return view, lookup(view)
        except NotFound:
            self._note_denied(lookup, withheld)
            raise

    def _note_denied(
        self, lookup: Callable[[View], Any], withheld: Callable[[Catalog], bool] | None = None
    ) -> None:
        try:
            lookup(personas_mod.full_view(self.catalog))
        except NotFound:
            if withheld is not None and self.catalog.withheld and withheld(self.catalog):
                audit.note(outcome="withheld")
            return  # otherwise unknown everywhere: an error, not a denial
        audit.note(outcome="denied")

    # --- forwarding ------------------------------------------------------------------------------

    async def call_tool(
        self,
        params: Mapping[str, Any],
        *,
        persona: str | None = None,
        on_progress: ProgressRelay | None = None,
        on_log: LogSink | None = None,
        client: ClientChannel | None = None,
    ) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("tools/call needs a tool name")
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise InvalidRequest(f"arguments of {name} must be an object")
        view = self.view(persona)
        if view.search and name == personas_mod.SEARCH_TOOL:
            return await self._search(persona, arguments or {})
        if view.search:
            if name != personas_mod.CALL_TOOL:
                raise NotFound(f"Unknown tool: {name}")
            inner = (arguments or {}).get("name")
            if not isinstance(inner, str):
                raise InvalidRequest(f"{personas_mod.CALL_TOOL} needs the name of a tool found by search")
            name, arguments = inner, (arguments or {}).get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                raise InvalidRequest(f"arguments of {name} must be an object")
        view, entry = await self._resolve(
            persona, lambda v: v.tool(name), withheld=lambda c: name in c.withheld_tools
        )
        route = self.catalog.tool(entry.target)
        audit.note(server=route.upstream.name)
        upstream_params = _with_extras({"name": route.name}, params)
        sent = view.arguments(entry, arguments)
        guard = self.guard
        if guard is not None and sent is not None:
            sent = guard.check("arguments", view.persona, entry.target, sent)
        if sent is not None:
            upstream_params["arguments"] = sent
        timeout = route.upstream.config.tool_timeouts.get(route.name)
        if on_log is not None and route.upstream.era == "stateless":
            # A 2026-07-28 upstream logs only for a request that opts in; mcpgw filters per client.
            upstream_params.setdefault("_meta", {})[LOG_LEVEL_META_KEY] = "debug"
        async with self._tracked():
            result = await self._request_with_input(
                route.upstream,
                "tools/call",
                upstream_params,
                persona=persona,
                client=client,
                on_progress=on_progress,
                on_log=on_log,
                timeout=timeout,
            )
        namespace = self.catalog.namespace_of(route.upstream)
        if namespace and isinstance(result.get("content"), list):
            result["content"] = catalog_mod.rewrite_content_uris(result["content"], namespace)
        if guard is not None:
            result = guard.check("results", view.persona, entry.target, result)
        return result

    async def _request_with_input(
        self,
        upstream: Upstream,
        method: str,
        params: dict[str, Any],
        *,
        persona: str | None,
        client: ClientChannel | None,
        on_progress: ProgressRelay | None = None,
        on_log: LogSink | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a request whose upstream may ask for sampling or elicitation, in either era, on the way.

        The upstream request counts as in flight (`self.inflight`) for as long as it runs, once,
        whichever path it takes; a client's retry of an exchange sends nothing upstream itself.
        """
        step = audit.current()
        caller = Caller(
            persona=self.resolve_persona(persona),
            client=client,
            request_id=step.request_id if step is not None else None,
            on_log=on_log,
        )
        exchange = self.sampler.resumed(params, caller.persona)
        if exchange is not None:
            return await self.sampler.next_of(exchange, on_log=on_log)
        params = self.sampler.roots_seal.open(params)
        if self._tasks is not None and self.sampler.needs_exchange(upstream.name, upstream.era, caller):
            exchange, runs_as = self.sampler.open_exchange(caller, timeout=timeout or upstream.timeout)

            async def run(exchange: Exchange = exchange) -> None:
                result: dict[str, Any] | None = None
                error: BaseException | None = None
                try:
                    with self.inflight.calling(upstream.name, runs_as):
                        result = await upstream.request(method, params, timeout=timeout)
                except Exception as exc:
                    error = exc
                finally:
                    exchange.finish(result, error)

            self._tasks.start_soon(run)
            return await self.sampler.next_of(exchange, on_log=on_log)
        with self.inflight.calling(upstream.name, caller):
            result = await upstream.request(method, params, timeout=timeout, on_progress=on_progress)
            if result.get("resultType") != "input_required":
                return result

            async def retry(responses: dict[str, Any], state: str | None) -> dict[str, Any]:
                again = {**params, "inputResponses": responses}
                if state is not None:
                    again["requestState"] = state
                else:
                    again.pop("requestState", None)
                return await upstream.request(method, again, timeout=timeout, on_progress=on_progress)

            return await self.sampler.fulfil(upstream.name, result, caller, retry)

    async def _search(self, persona: str | None, arguments: Mapping[str, Any]) -> dict[str, Any]:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequest(f"{personas_mod.SEARCH_TOOL} needs a query")
        limit = arguments.get("limit", personas_mod.SEARCH_LIMIT)
        await self.wait_started()
        found = self.view(persona).search_tools(
            query, limit if isinstance(limit, int) else personas_mod.SEARCH_LIMIT
        )
        tools = [{k: tool[k] for k in ("name", "description", "inputSchema") if k in tool} for tool in found]
        text = json.dumps({"tools": tools}, ensure_ascii=False)
        return {"content": [{"type": "text", "text": text}], "structuredContent": {"tools": tools}}

    async def read_resource(
        self, params: Mapping[str, Any], *, persona: str | None = None, client: ClientChannel | None = None
    ) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise InvalidRequest("resources/read needs a uri")
        await self._resolve(
            persona, lambda v: v.check_resource(uri, self.catalog), withheld=lambda c: c.withholds_uri(uri)
        )
        route = await self._route(lambda c: c.resource(uri))
        audit.note(server=route.upstream.name)
        async with self._tracked():
            result = await self._request_with_input(
                route.upstream,
                "resources/read",
                _with_extras({"uri": route.name}, params),
                persona=persona,
                client=client,
            )
        namespace = self.catalog.namespace_of(route.upstream)
        if namespace:
            result["contents"] = [
                {**item, "uri": catalog_mod.expose_uri(namespace, item["uri"])}
                if isinstance(item, dict) and isinstance(item.get("uri"), str)
                else item
                for item in result.get("contents") or []
            ]
        if self.guard is not None:
            result = self.guard.check("results", self.resolve_persona(persona), uri, result)
        return result

    async def subscribe(
        self, params: Mapping[str, Any], *, persona: str | None, connection: Subscriber, on: bool = True
    ) -> dict[str, Any]:
        """`resources/subscribe` (or, with `on=False`, `unsubscribe`) for one downstream connection."""
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise InvalidRequest(f"resources/{'subscribe' if on else 'unsubscribe'} needs a uri")
        await self._resolve(
            persona, lambda v: v.check_resource(uri, self.catalog), withheld=lambda c: c.withholds_uri(uri)
        )
        route = await self._route(lambda c: c.resource(uri))
        audit.note(server=route.upstream.name)
        if on:
            await self.watch.subscribe(route.upstream, route.name, uri, connection)
        else:
            await self.watch.unsubscribe(route.upstream, route.name, connection)
        return {}

    async def _resource_updated(self, upstream: str, uri: str) -> None:
        namespace = (
            self.catalog.namespace_of(self.upstreams[upstream]) if upstream in self.upstreams else None
        )
        await self.watch.updated(upstream, uri, namespace)

    async def get_prompt(
        self, params: Mapping[str, Any], *, persona: str | None = None, client: ClientChannel | None = None
    ) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("prompts/get needs a prompt name")
        await self._resolve(
            persona, lambda v: v.check_prompt(name), withheld=lambda c: name in c.withheld_prompts
        )
        route = await self._route(lambda c: c.prompt(name))
        audit.note(server=route.upstream.name)
        upstream_params = _with_extras({"name": route.name}, params)
        if params.get("arguments") is not None:
            upstream_params["arguments"] = params["arguments"]
        async with self._tracked():
            result = await self._request_with_input(
                route.upstream, "prompts/get", upstream_params, persona=persona, client=client
            )
        namespace = self.catalog.namespace_of(route.upstream)
        if namespace:
            for message in result.get("messages") or []:
                if isinstance(message, dict) and isinstance(message.get("content"), dict):
                    message["content"] = catalog_mod.rewrite_content_uris([message["content"]], namespace)[0]
        if self.guard is not None:
            result = self.guard.check("results", self.resolve_persona(persona), name, result)
        return result

    async def complete(self, params: Mapping[str, Any], *, persona: str | None = None) -> dict[str, Any]:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise InvalidRequest("completion/complete needs a ref")
        if ref.get("type") == "ref/prompt":
            name = str(ref.get("name"))
            await self._resolve(
                persona, lambda v: v.check_prompt(name), withheld=lambda c: name in c.withheld_prompts
            )
            route = await self._route(lambda c: c.prompt(name))
            upstream_ref = {**ref, "name": route.name}
        elif ref.get("type") == "ref/resource":
            uri = str(ref.get("uri"))
            await self._resolve(
                persona,
                lambda v: _check_completion_uri(v, uri),
                withheld=lambda c: uri in c.withheld_templates or c.withholds_uri(uri),
            )
            route = await self._route(lambda c: c.resource(uri))
            upstream_ref = {**ref, "uri": route.name}
        else:
            raise NotFound(f"Unknown completion reference type: {ref.get('type')}")
        if "completions" not in route.upstream.capabilities:
            return {"completion": {"values": [], "hasMore": False}}
        upstream_params = _with_extras({"ref": upstream_ref}, params)
        for key in ("argument", "context"):
            if key in params:
                upstream_params[key] = params[key]
        caller = Caller(persona=self.resolve_persona(persona))
        async with self._tracked():
            with self.inflight.calling(route.upstream.name, caller):
                return await route.upstream.request("completion/complete", upstream_params)

    async def _route(self, lookup: Callable[[Catalog], Route]) -> Route:
        """Look a name up in the full catalog (after the persona allowed it), waiting out start-up."""
        try:
            return lookup(self.catalog)
        except NotFound:
            if self._started.is_set():
                raise
        await self.wait_started()
        return lookup(self.catalog)


def _check_completion_uri(view: View, uri: str) -> None:
    listed = {r["uri"] for r in view.resources} | {str(t.get("uriTemplate")) for t in view.resource_templates}
    if uri not in listed:
        raise NotFound(f"Unknown resource: {uri}")


def _with_extras(base: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Carry the client's own `_meta` keys and 2026 multi-round-trip fields upstream."""
    meta = forwardable_meta(params.get("_meta"))
    if meta:
        base["_meta"] = meta
    for key in ("inputResponses", "requestState"):
        if key in params:
            base[key] = params[key]
    return base
