"""The gateway: its upstreams, its current catalog, and forwarding requests to them.

Owns: starting every enabled upstream at once, rebuilding the catalog when an
upstream becomes ready, fails, or says its lists changed, telling listeners
(the server's transports) what changed, and the forwarding of calls, reads,
prompt gets and completions with their arguments, `_meta` and progress.
Transport concerns (stdio, HTTP, eras on the wire) belong to `server`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import anyio

from mcpgw import audit
from mcpgw import catalog as catalog_mod
from mcpgw.audit import AuditLog
from mcpgw.bridge import Bridge
from mcpgw.catalog import Catalog, Problem, Route
from mcpgw.catalog import personas as personas_mod
from mcpgw.catalog.personas import View
from mcpgw.config import DEFAULT_PERSONA, Registry, namespace_of
from mcpgw.core import kinds
from mcpgw.core.pipeline import Pipeline, Request
from mcpgw.core.watch import ResourceWatch, Subscriber
from mcpgw.errors import NotFound, Unavailable
from mcpgw.observe.metrics import Metrics, Snapshot, UpstreamSample
from mcpgw.sampling import Sampler
from mcpgw.security.dataguard import Guard
from mcpgw.upstream import Hooks, Upstream
from mcpgw.upstream import for_server as upstream_for
from mcpgw.upstream.inflight import ClientChannel, InFlight
from mcpgw.upstream.lists import ListKind
from mcpgw.upstream.logrelay import LogRelay, LogSink
from mcpgw.upstream.session import ProgressRelay
from mcpgw.upstream.supervisor import State

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
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.audit = audit
        self.guard = guard
        """Data rules on arguments and results (`dataguard`); None when there are none."""
        self.metrics = metrics
        """Prometheus metrics (`observe.metrics`); None when they are not served."""
        self.trust = trust
        """Applied to every catalog built (pinned definitions, poisoning checks: see `trust.Trust`)."""
        self.upstreams: dict[str, Upstream] = {}
        self.inflight = InFlight()
        """The calls in flight per upstream: log lines and sampling requests are attributed from it."""
        self.logs = LogRelay(self.inflight)
        self.watch = ResourceWatch()
        self._namespaces: list[tuple[str, Upstream]] = []
        self.sampler = Sampler(
            registry,
            audit=audit,
            guard=guard,
            inflight=self.inflight,
            upstreams=self.upstreams,
            metrics=metrics,
        )
        self.bridge = Bridge(
            registry, sampler=self.sampler, inflight=self.inflight, tasks=lambda: self._tasks
        )
        """Every call that may need client input on its way, in either era (`bridge.Bridge.request`)."""
        for name, server in registry.enabled_servers().items():
            hooks = Hooks(
                on_change=self._upstream_changed,
                on_state=self._upstream_state,
                on_log=self.logs.deliver,
                on_resource_updated=self._resource_updated,
                on_sampling=self.bridge.on_sampling if self.sampler.answers_sampling(name) else None,
                on_elicitation=self.bridge.on_elicitation if self.sampler.answers_elicitation(name) else None,
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
        self.pipeline = Pipeline(self)
        self._tasks: anyio.abc.TaskGroup | None = None
        """The gateway's own tasks: calls that outlive one downstream request (`bridge.Exchange`)."""
        if metrics is not None:
            metrics.watch(self._snapshot)

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
    async def tracked(self) -> AsyncIterator[None]:
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

    def _snapshot(self) -> Snapshot:
        """The gateway's state as a metrics scrape reads it."""
        samples = [
            UpstreamSample(u.name, u.state, *u.slots, tools=len(u.lists["tools"]))
            for u in list(self.upstreams.values())
        ]
        log = self.audit
        return Snapshot(
            samples,
            states=get_args(State),
            in_flight=self._in_flight,
            audit_queued=log.queued if log is not None else None,
            audit_dropped=log.dropped if log is not None else 0,
            audit_written=log.written if log is not None else 0,
        )

    def _upstream_state(self, upstream: Upstream) -> None:
        if self.metrics is not None and upstream.state == "restarting":
            self.metrics.restarted(upstream.name)
        if self.audit is not None:
            outcome = audit.Outcome.OK if upstream.state in ("ready", "stopped") else audit.Outcome.ERROR
            self.audit.event(
                audit.Kind.UPSTREAM,
                server=upstream.name,
                name=upstream.state,
                outcome=outcome,
                error=upstream.error if outcome is audit.Outcome.ERROR else None,
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

    async def lookup(
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
                audit.note(outcome=audit.Outcome.WITHHELD)
            return  # otherwise unknown everywhere: an error, not a denial
        audit.note(outcome=audit.Outcome.DENIED)

    # --- forwarding: every kind through the one pipeline (`core.pipeline`) -----------------------

    async def call_tool(
        self,
        params: Mapping[str, Any],
        *,
        persona: str | None = None,
        on_progress: ProgressRelay | None = None,
        on_log: LogSink | None = None,
        client: ClientChannel | None = None,
    ) -> dict[str, Any]:
        request = Request(params, persona, client=client, on_progress=on_progress, on_log=on_log)
        return await self.pipeline.run(kinds.CALL_TOOL, request)

    async def read_resource(
        self, params: Mapping[str, Any], *, persona: str | None = None, client: ClientChannel | None = None
    ) -> dict[str, Any]:
        return await self.pipeline.run(kinds.READ_RESOURCE, Request(params, persona, client=client))

    async def get_prompt(
        self, params: Mapping[str, Any], *, persona: str | None = None, client: ClientChannel | None = None
    ) -> dict[str, Any]:
        return await self.pipeline.run(kinds.GET_PROMPT, Request(params, persona, client=client))

    async def complete(self, params: Mapping[str, Any], *, persona: str | None = None) -> dict[str, Any]:
        return await self.pipeline.run(kinds.COMPLETE, Request(params, persona))

    async def subscribe(
        self, params: Mapping[str, Any], *, persona: str | None, connection: Subscriber, on: bool = True
    ) -> dict[str, Any]:
        """`resources/subscribe` (or, with `on=False`, `unsubscribe`) for one downstream connection."""
        return await self.pipeline.run(kinds.Subscribe(connection, on=on), Request(params, persona))

    async def _resource_updated(self, upstream: str, uri: str) -> None:
        namespace = (
            self.catalog.namespace_of(self.upstreams[upstream]) if upstream in self.upstreams else None
        )
        await self.watch.updated(upstream, uri, namespace)

    async def route(self, lookup: Callable[[Catalog], Route]) -> Route:
        """Look a name up in the full catalog (after the persona allowed it), waiting out start-up."""
        try:
            return lookup(self.catalog)
        except NotFound:
            if self._started.is_set():
                raise
        await self.wait_started()
        return lookup(self.catalog)
