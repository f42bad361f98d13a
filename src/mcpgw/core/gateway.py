"""The gateway: its upstreams, its current catalog, and forwarding requests to them.

Owns: starting every enabled upstream at once, rebuilding the catalog when an
upstream becomes ready, fails, or says its lists changed, telling listeners
(the server's transports) what changed, taking a reloaded registry's parts in
one swap (`reconfigure`; what it restarts is `core.reload`'s to decide), and the forwarding of
calls, reads, prompt gets and completions with their arguments, `_meta` and progress. Transport
concerns (stdio, HTTP, eras on the wire) belong to `server`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from mcpgw import audit
from mcpgw import catalog as catalog_mod
from mcpgw.audit import AuditLog
from mcpgw.bridge import Bridge
from mcpgw.catalog import Catalog, Problem, Route
from mcpgw.catalog import personas as personas_mod
from mcpgw.catalog.personas import View
from mcpgw.cluster.budgets import SharedBudgets
from mcpgw.config import DEFAULT_PERSONA, Registry, ServerConfig, call_timeout
from mcpgw.core import kinds, status
from mcpgw.core import reload as reload_mod
from mcpgw.core.peruser import PerUser
from mcpgw.core.pipeline import Pipeline, Request
from mcpgw.core.reload import Parts, Plan
from mcpgw.core.watch import ResourceWatch, Subscriber
from mcpgw.errors import ConfigError, NotFound, Unavailable
from mcpgw.sampling import Sampler
from mcpgw.security.dataguard import Guard
from mcpgw.security.flows import Flows, SessionRef
from mcpgw.upstream import Hooks, Upstream
from mcpgw.upstream import for_server as upstream_for
from mcpgw.upstream.inflight import ClientChannel, InFlight
from mcpgw.upstream.lists import LIST_OF, ListKind
from mcpgw.upstream.logrelay import LogRelay, LogSink
from mcpgw.upstream.session import ProgressRelay

if TYPE_CHECKING:
    from mcpgw.cluster import Cluster
    from mcpgw.core.memory import CatalogMemory
    from mcpgw.observe.metrics import Metrics
    from mcpgw.security.trust import Trust

logger = logging.getLogger("mcpgw.gateway")

T = TypeVar("T")
STOP_GRACE = 5.0
LOCK_POLL = 0.5
"""Seconds between looks at the lock file's stamp (see `Trust.reload`)."""

ChangeListener = Callable[[set[str]], Awaitable[None]]
"""Called with the changed list names: a subset of {"tools", "resources", "prompts"}."""


class Gateway:
    """The running gateway: its upstreams, its catalog, and every request forwarded to them.

    Built by `mcpgw.assembly.build_gateway`, which hands it what it uses: the audit log, the data
    rules (`guard`), the pin/poisoning policy (`trust`) and the sessions' flow state (`flows`, kept
    across reloads; None: no flow policies at all). Nothing is attached afterwards.
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
        flows: Flows | None = None,
        memory: CatalogMemory | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.registry, self.memory = registry, memory  # memory: the last run's catalog (`core.memory`)
        self.cluster = cluster  # the replicas' shared state (`[cluster]`); None: all this process's own
        self.flows = flows
        self.audit = audit
        self.guard = guard
        """Data rules on arguments and results (`dataguard`); None when there are none."""
        self.metrics = metrics
        """Prometheus metrics (`observe.metrics`); None when they are not served."""
        self.trust = trust
        """Applied to every catalog built (pinned definitions, poisoning checks: see `trust.Trust`)."""
        self._parts = Parts(registry, guard=guard, trust=trust, secrets=dict(secrets or {}))
        """What the running configuration was built from (`reconfigure` swaps it whole)."""
        self._in_process = dict(in_process or {})
        self.upstreams: dict[str, Upstream] = {}
        self.inflight = InFlight()
        """The calls in flight per upstream: log lines and sampling requests are attributed from it."""
        self.logs = LogRelay(self.inflight)
        self.watch = ResourceWatch()
        self.sampler = Sampler(
            registry, audit=audit, guard=guard, inflight=self.inflight, upstreams=self.upstreams,
            metrics=metrics, shared_budgets=SharedBudgets.of(cluster),
        )  # fmt: skip
        self.bridge = Bridge(
            registry, sampler=self.sampler, inflight=self.inflight, tasks=lambda: self._tasks
        )
        """Every call that may need client input on its way, in either era (`bridge.Bridge.request`)."""
        for name, server in registry.enabled_servers().items():
            self.upstreams[name] = self._upstream(name, server, self._parts, self.sampler)
        self._namespaces = reload_mod.namespaces(registry, self.upstreams)
        self._retiring: set[Upstream] = set()
        """Upstreams a reload removed or replaced, finishing their calls before they stop."""
        self._reloading = anyio.Lock()
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
        self.per_user = PerUser(self, secrets=lambda: self._parts.secrets, spawn=self._spawn)
        self._tasks: anyio.abc.TaskGroup | None = None
        """The gateway's own tasks: calls that outlive one downstream request (`bridge.Exchange`)."""
        if metrics is not None:
            metrics.watch(partial(status.metrics_snapshot, self))

    # --- lifecycle -------------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Start every upstream in parallel; stop them all on exit, however it happens."""
        self._rebuild()  # judged by the pins before anything is listed: a remembered catalog has names
        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                tg.start_soon(upstream.run)
            tg.start_soon(self._watch_startup)
            tg.start_soon(self._watch_lock)
            self._tasks = tg
            try:
                yield self
            finally:
                running = [*self.upstreams.values(), *self._retiring, *self.per_user.running()]
                for upstream in running:
                    upstream.stop()
                # One still starting (or restarting) would hold shutdown up to its start-up timeout;
                # the stdio transport's own shutdown is shielded, so its child is still stopped.
                with anyio.move_on_after(STOP_GRACE):
                    while any(u.connected for u in running):
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()

    def hurry(self) -> None:
        """Stop every upstream now, stdio children's process groups at once: the client is gone (a stdio
        client closing stdin gives 2 s, the SDK's grace, before SIGTERM: no upstream may hold us past it)."""
        for upstream in self.upstreams.values():
            upstream.stop(now=True)

    async def _watch_lock(self, interval: float = LOCK_POLL) -> None:
        """The lock file changing under a running gateway (`mcpgw pin`): the catalog is judged again,
        by whichever `Trust` is current (a registry reload may have replaced it)."""
        while True:
            await anyio.sleep(interval)
            trust = self.trust
            if trust is not None and trust.reporting and trust.reload():
                await self.refresh()

    def _upstream(self, name: str, server: ServerConfig, parts: Parts, sampler: Sampler) -> Upstream:
        hooks = Hooks(
            on_change=self._upstream_changed,
            on_state=self._upstream_state,
            on_log=self.logs.deliver,
            on_resource_updated=self._resource_updated,
            on_sampling=self.bridge.on_sampling if sampler.answers_sampling(name) else None,
            on_elicitation=self.bridge.on_elicitation if sampler.answers_elicitation(name) else None,
        )
        return upstream_for(
            name,
            server,
            parts.registry,
            secrets=parts.secrets,
            hooks=hooks,
            in_process=self._in_process.get(name),
        )

    async def drain(self, grace: float) -> int:
        """Refuse new requests, wait up to `grace` seconds for those in flight; return how many are left."""
        self.draining = True
        if self._in_flight:
            logger.info("draining %d in-flight request(s), up to %gs", self._in_flight, grace)
            with anyio.move_on_after(grace):
                await self._idle.wait()
        return self._in_flight

    @property
    def in_flight(self) -> int:
        """Client requests being served now."""
        return self._in_flight

    def enter(self) -> None:
        """A request is forwarded (counted until its `leave`, in a `finally`): refused once draining."""
        if self.draining:
            raise Unavailable("mcpgw is shutting down and takes no new requests")
        self._in_flight += 1

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self.draining:  # only `drain` waits for it: no Event per call
            self._idle.set()

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
        before, after = self.catalog, self._rebuild()
        self._started.set()
        if self.memory is not None:  # a client that listed from memory hears what the live catalog changed
            await self._announce(await self.memory.settled(before, after, self.upstreams))

    async def wait_started(self) -> None:
        """Wait until every upstream is ready or has failed (each is bounded by its start-up timeout)."""
        await self._started.wait()

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _rebuild(self) -> Catalog:
        catalog = catalog_mod.build(self._namespaces, standing=self.memory.standing if self.memory else None)
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
        if not self._started.is_set() and not self.memory:
            return  # nobody has listed yet: nothing to announce
        changed = {LIST_OF[kind] for kind in kinds if getattr(before, kind) != getattr(after, kind)}
        await self._announce(changed)

    async def _announce(self, changed: set[str]) -> None:
        for listener in list(self._listeners):
            try:
                await listener(changed)
            except Exception:
                logger.exception("announcing a catalog change failed")

    # --- reloading the registry ------------------------------------------------------------------

    async def reconfigure(self, parts: Parts) -> Plan:
        """Serve what `parts` (a reloaded registry, built by `assembly.reload_parts`) describe from now on.

        Upstreams added or changed are started first and given until they settle (ready or
        failed); a persona override the new catalog cannot satisfy then refuses the whole reload
        (`ConfigError`), and nothing changes. Otherwise everything is swapped in one step, with no
        await in between, so a request sees either the old configuration or the new one; the
        catalog is rebuilt and clients are told what changed. Upstreams removed or replaced finish
        the calls they have in flight (up to `[gateway] drain_grace`); what is still running then
        fails with an error naming the reload. Other upstreams and client sessions are untouched.
        """
        async with self._reloading:
            if self.draining:
                raise Unavailable("mcpgw is shutting down and takes no new configuration")
            plan = reload_mod.plan(self._parts, parts)
            if plan.empty:
                return plan
            registry = parts.registry
            sampler = Sampler(
                registry,
                audit=self.audit,
                guard=parts.guard,
                inflight=self.inflight,
                upstreams=self.upstreams,
                metrics=self.metrics,
                shared_budgets=SharedBudgets.of(self.cluster),
            )
            fresh = {
                name: self._upstream(name, registry.servers[name], parts, sampler) for name in plan.started
            }
            await self._start(fresh)
            upstreams = {**self.upstreams, **fresh}
            namespaces = reload_mod.namespaces(registry, upstreams)
            try:
                reload_mod.check_personas(parts, namespaces)
            except ConfigError:
                for upstream in fresh.values():
                    upstream.stop()
                if parts.trust is self.trust:
                    self._rebuild()  # it judged with the running policy: judge the running catalog again
                raise
            # The swap: no await from here until the catalog is rebuilt.
            old = self._parts
            retired = [self.upstreams.pop(name) for name in plan.stopped]
            self.upstreams.clear()
            self.upstreams.update({name: upstreams[name] for name in registry.enabled_servers()})
            for name in plan.retuned:
                server = registry.servers[name]
                self.upstreams[name].retune(server, timeout=call_timeout(registry, server))
            self.registry, self.guard, self.trust, self.sampler = registry, parts.guard, parts.trust, sampler
            self.bridge.reconfigure(registry, sampler=sampler)
            self._parts, self._namespaces = parts, namespaces
            before, after = self.catalog, self._rebuild()
            for upstream in retired:
                self._retiring.add(upstream)
                reason = "removed from the registry" if upstream.name in plan.removed else "changed"
                self._spawn(self._retire, upstream, f"{reason} by a registry reload")
            views_changed = reload_mod.views_changed(old, parts)
            changed = {
                LIST_OF[kind]
                for kind in LIST_OF
                if views_changed or getattr(before, kind) != getattr(after, kind)
            }
            for name in plan.removed:
                self.watch.dropped(name)
            for name in plan.restarted:
                await self.watch.moved(self.upstreams[name])
            await self._announce(changed)
            return plan

    def _spawn(self, task: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tasks is None:
            raise Unavailable("the gateway is not running")
        self._tasks.start_soon(task, *args)

    async def _start(self, upstreams: Mapping[str, Upstream]) -> None:
        """Run `upstreams` in the gateway's task group and wait until each has settled."""
        for upstream in upstreams.values():
            self._spawn(upstream.run)
        async with anyio.create_task_group() as tg:
            for upstream in upstreams.values():
                tg.start_soon(upstream.wait_settled)

    async def _retire(self, upstream: Upstream, reason: str) -> None:
        """Let a removed or replaced upstream finish its calls (up to `drain_grace`), then stop it."""
        try:
            await reload_mod.retire(
                upstream, reason, grace=self.registry.gateway.drain_grace, stop_grace=STOP_GRACE
            )
        finally:
            self._retiring.discard(upstream)

    # --- personas --------------------------------------------------------------------------------

    def resolve_persona(self, persona: str | None) -> str | None:
        """The persona a request gets: the one chosen, else `default` if configured, else none."""
        return personas_mod.resolve(self.registry, persona)

    def view(self, persona: str | None) -> View:
        """The persona's view of the current catalog, built once per catalog. Kept under the persona
        as chosen too (one dict read a request): a registry is only swapped with a new catalog."""
        catalog = self.catalog
        if catalog is not self._views_of:
            self._views_of, self._views = catalog, {}
        if (view := self._views.get(persona)) is not None:
            return view
        name = self.resolve_persona(persona)
        if (view := self._views.get(name)) is None:
            if name is None:
                view = personas_mod.full_view(catalog, registry=self.registry)
            else:
                view = personas_mod.build_view(name, self.registry.personas[name], catalog, self.registry)
        self._views[name] = self._views[persona] = view
        return view

    def check_personas(self) -> list[str]:
        """Build every persona's view now; warnings are returned, a broken override raises `ConfigError`."""
        warnings: list[str] = []
        for name in self.registry.personas:
            warnings.extend(self.view(name).warnings)
        warnings.extend(w for w in self.view(None).warnings if w not in warnings)  # workflows' problems
        if self.registry.personas and DEFAULT_PERSONA not in self.registry.personas:
            warnings.append(
                "personas are configured but none is named 'default': "
                "clients that choose no persona see the whole catalog"
            )
        return warnings

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
        if self.catalog.remembered:  # resolved against the live lists, judged by the pins, never memory's
            await self.wait_started()
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
            lookup(personas_mod.full_view(self.catalog, registry=self.registry))
        except NotFound:
            if withheld is not None and self.catalog.withheld and withheld(self.catalog):
                audit.note(outcome=audit.Outcome.WITHHELD)
            return  # otherwise unknown everywhere: an error, not a denial
        audit.note(outcome=audit.Outcome.DENIED)

    # --- forwarding: every kind through the one pipeline (`core.pipeline`) -----------------------

    def call_tool(
        self,
        params: Mapping[str, Any],
        *,
        persona: str | None = None,
        on_progress: ProgressRelay | None = None,
        on_log: LogSink | None = None,
        client: ClientChannel | None = None,
        session: SessionRef | None = None,
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        request = Request(params, persona, client, on_progress, on_log, session)
        return self.pipeline.run(kinds.CALL_TOOL, request)  # its coroutine: no frame of this method

    async def read_resource(
        self,
        params: Mapping[str, Any],
        *,
        persona: str | None = None,
        client: ClientChannel | None = None,
        session: SessionRef | None = None,
    ) -> dict[str, Any]:
        return await self.pipeline.run(kinds.READ_RESOURCE, Request(params, persona, client, session=session))

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
