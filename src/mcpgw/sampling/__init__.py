"""Sampling and elicitation: answering upstreams that ask their client for an LLM completion or for input.

Owns: the policy that decides who answers (`relay` to the client, `llm`
through litellm, `auto`, `deny`) per server and persona; routing a request to a
`[sampling.routes]` entry (model hints, cost/speed/intelligence priorities,
per-persona allowed routes) with an ordered fallback chain run by litellm's
Router (retries, timeouts, cooldowns); turning MCP sampling messages, tools and
tool choice into chat-completions calls and the answer back; per-persona daily
budgets, checked before anything is sent; one `sampling` audit row per request
(route used, routes tried, tokens, cost, latency, outcome); and both shapes of
request: handshake-era `sampling/createMessage` / `elicitation/create` sent to
mcpgw's upstream session, and 2026-07-28 `input_required` results, fulfilled
and retried until the call completes.

litellm costs seconds and ~160 MiB to import: it is imported on the first
request that needs a model, never on the gateway's start-up path, and with
`LITELLM_LOCAL_MODEL_COST_MAP=True` so it never downloads its price map.

Which downstream call a handshake-era sampling request belongs to: the
upstream session is shared, and stdio carries no link between the two, so the
request is attributed to the calls in flight on that upstream (`inflight`, the
registry the log relay reads too). When calls from different personas are in
flight at once the request is refused rather than charged to the wrong persona.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mcpgw.bridge.exchange import EXCHANGE_KEEP, Exchange
from mcpgw.bridge.rootseal import RootsSeal
from mcpgw.config import DEFAULT_PERSONA, Registry, SamplingPolicy, SamplingRoute, SamplingScope
from mcpgw.errors import DataBlocked, GatewayError, SamplingFailed, SamplingRefused
from mcpgw.upstream.answers import as_uri
from mcpgw.upstream.inflight import Caller as Caller
from mcpgw.upstream.inflight import ClientChannel as ClientChannel
from mcpgw.upstream.inflight import InFlight, LogSink

if TYPE_CHECKING:
    from mcpgw.audit import AuditLog
    from mcpgw.security.dataguard import Guard
    from mcpgw.upstream import Upstream

logger = logging.getLogger("mcpgw.sampling")

SAMPLING = "sampling/createMessage"
ELICITATION = "elicitation/create"
ROOTS = "roots/list"


@dataclass
class Record:
    """The accounting of one sampling request, as it goes to the audit log."""

    server: str
    persona: str | None
    request_id: str | None = None
    route: str | None = None
    model: str | None = None
    tried: list[str] = field(default_factory=list)
    retries: int = 0
    """Retries litellm made on the route that answered."""
    cooling: list[str] = field(default_factory=list)
    """Routes of the chain that litellm's Router was skipping (cooldown after a failure)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    answered_by: str = "llm"
    load_ms: float = 0.0
    """Time this request waited for litellm's one-time import and Router build (0 once warm)."""
    outcome: str = "ok"
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "model": self.model,
            "tried": self.tried,
            "retries": self.retries,
            "cooling": self.cooling,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 8),
            "answered_by": self.answered_by,
            "load_ms": round(self.load_ms, 1),
        }


def _usd(amount: float) -> str:
    """Dollars as people read them: cents for real budgets, micro-dollars for tiny ones."""
    return f"{amount:.2f}" if amount >= 0.01 else f"{amount:.6f}"


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


class Sampler:
    """Answers sampling and elicitation requests for every upstream of one gateway."""

    def __init__(
        self,
        registry: Registry,
        *,
        audit: AuditLog | None = None,
        guard: Guard | None = None,
        inflight: InFlight | None = None,
        upstreams: Mapping[str, Upstream] | None = None,
    ) -> None:
        self.inflight = inflight if inflight is not None else InFlight()
        """The calls in flight per upstream, shared with the gateway's log relay."""
        self.settings = registry.sampling
        self.guard = guard
        """The gateway's data rules (`dataguard`), applied to what goes to a model or a client."""
        self.registry = registry
        self.audit = audit
        self._upstreams: Mapping[str, Upstream] = upstreams if upstreams is not None else {}
        """The gateway's upstreams (filled as it builds them): their instructions for `includeContext`."""
        self.roots_seal = RootsSeal()
        self._router: Any = None
        self._router_lock = anyio.Lock()
        self._exchanges: dict[str, Exchange] = {}
        self._spent: dict[tuple[str, str], list[float]] = {}
        """(persona, UTC day) -> [tokens, usd]; seeded from the audit log at first use."""
        self.records: list[Record] = []
        """The last requests' accounting (bounded); the audit log holds them all."""

    def _instructions(self, server: str | None) -> str:
        """`includeContext`: what mcpgw knows of one upstream (or all): its instructions and tools."""
        chosen = [u for u in self._upstreams.values() if server is None or u.name == server]
        parts = []
        for upstream in chosen:
            tools = ", ".join(str(t.get("name")) for t in upstream.lists["tools"])
            text = f"MCP server {upstream.name}" + (
                f": {upstream.instructions}" if upstream.instructions else ""
            )
            parts.append(text + (f" (tools: {tools})" if tools else ""))
        return "\n".join(parts)

    # --- policy ----------------------------------------------------------------------------------

    def _scope(self, scopes: Mapping[str, SamplingScope], name: str | None) -> SamplingScope | None:
        return scopes.get(name) if name is not None else None

    def policy(self, server: str, persona: str | None) -> SamplingPolicy:
        """`deny` from the server or the persona wins; else the persona's, the server's, the default."""
        by_server = self._scope(self.settings.servers, server)
        by_persona = self._scope(self.settings.personas, persona or DEFAULT_PERSONA)
        chosen = [s.policy for s in (by_persona, by_server) if s is not None and s.policy is not None]
        if "deny" in chosen:
            return "deny"
        return chosen[0] if chosen else self.settings.policy

    def answers_sampling(self, server: str) -> bool:
        """Whether mcpgw declares sampling to this upstream (so it offers its sampling tools).

        Only when something can answer for some caller: a route for `llm`/`auto`, or an explicit
        `relay`. Without routes, `auto` can only relay, and most clients cannot sample, so
        declaring it would list tools that fail for them.
        """
        if self.policy(server, None) == "deny" and not any(
            s.policy not in (None, "deny") for s in self.settings.personas.values()
        ):
            return False
        if self.settings.routes:
            return True
        scopes = [self.settings.servers.get(server), *self.settings.personas.values()]
        return self.settings.policy == "relay" or any(s is not None and s.policy == "relay" for s in scopes)

    def answers_elicitation(self, server: str) -> bool:
        """Whether mcpgw declares elicitation to this upstream: `elicitation = "relay"` only."""
        return self.settings.elicitation == "relay" and self.policy(server, None) != "deny"

    # --- attribution -----------------------------------------------------------------------------

    # --- handshake era: requests sent to mcpgw's upstream session --------------------------------

    async def on_sampling(self, server: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer an upstream's `sampling/createMessage` (raises `SamplingError` when it cannot)."""
        try:
            caller = self.inflight.requester(server)
        except SamplingRefused as exc:
            self._account(Record(server=server, persona=None, outcome="refused", error=str(exc)))
            raise
        return await self.sample(server, params, caller)

    async def on_elicitation(self, server: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.elicit(server, params, self.inflight.requester(server))

    # --- 2026-07-28: input_required results ------------------------------------------------------

    def passes_through(self, server: str, result: Mapping[str, Any], caller: Caller) -> bool:
        """A 2026-07-28 client answers the input requests itself: policy relay, or auto and it can."""
        client = caller.client
        if client is None or not client.modern:
            return False
        policy = self.policy(server, caller.persona)
        for request in (result.get("inputRequests") or {}).values():
            method = request.get("method") if isinstance(request, dict) else None
            if method == ELICITATION and client.can_elicit:
                return self.settings.elicitation != "deny" and policy != "deny"
            if method == SAMPLING and (policy == "relay" or (policy == "auto" and client.can_sample)):
                return True
        return False

    async def fulfil(
        self,
        server: str,
        result: dict[str, Any],
        caller: Caller,
        retry: Callable[[dict[str, Any], str | None], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Answer `input_required` results and retry until the call completes (or goes to the client)."""
        rounds = 0
        while result.get("resultType") == "input_required":
            if self.passes_through(server, result, caller):
                # Roots asked alongside are still mcpgw's to answer (see `rootseal`).
                return self.roots_seal.take(result, lambda: self._roots_answer(server))
            rounds += 1
            if rounds > self.settings.max_rounds:
                raise SamplingFailed(
                    f"upstream '{server}' still asked for input after {self.settings.max_rounds} rounds"
                )
            responses: dict[str, Any] = {}
            for key, request in (result.get("inputRequests") or {}).items():
                method = request.get("method") if isinstance(request, dict) else None
                params = request.get("params") or {} if isinstance(request, dict) else {}
                if method == SAMPLING:
                    responses[key] = await self.sample(server, params, caller)
                elif method == ELICITATION:
                    responses[key] = await self.elicit(server, params, caller)
                elif method == ROOTS:
                    responses[key] = self._roots_answer(server)
                else:
                    raise SamplingRefused(
                        f"upstream '{server}' asked for {method!r}, which mcpgw cannot answer"
                    )
            result = await retry(responses, result.get("requestState"))
        return result

    def _roots_answer(self, server: str) -> dict[str, Any]:
        server_config = self.registry.servers.get(server)
        roots = server_config.roots if server_config is not None else []
        return {"roots": [{"uri": as_uri(root)} for root in roots]}

    # --- handshake-era upstream, 2026-07-28 client ------------------------------------------------

    def needs_exchange(self, server: str, upstream_era: str, caller: Caller) -> bool:
        """Whether this call must be able to hand upstream requests to a 2026-07-28 client."""
        client = caller.client
        if client is None or not client.modern or upstream_era != "handshake":
            return False
        policy = self.policy(server, caller.persona)
        samples = client.can_sample and policy in ("relay", "auto") and self.answers_sampling(server)
        elicits = (
            client.can_elicit and self.settings.elicitation != "deny" and self.answers_elicitation(server)
        )
        return samples or elicits

    def open_exchange(self, caller: Caller, *, timeout: float) -> tuple[Exchange, Caller]:
        """A new exchange, and the caller the upstream call runs as (its client answers via the exchange)."""
        now = time.monotonic()
        for token, old in list(self._exchanges.items()):
            if old.finished_at is not None and now - old.finished_at > EXCHANGE_KEEP:
                del self._exchanges[token]  # finished, and its client never came back for the result
        exchange = Exchange(caller.persona, timeout=timeout)
        self._exchanges[exchange.token] = exchange
        client = caller.client
        assert client is not None
        relayed = ClientChannel(can_sample=client.can_sample, can_elicit=client.can_elicit, send=exchange.ask)
        runs_as = Caller(
            persona=caller.persona, client=relayed, request_id=caller.request_id, on_log=exchange.log
        )
        return exchange, runs_as

    def resumed(self, params: Mapping[str, Any], persona: str | None) -> Exchange | None:
        """The exchange a client's retry continues (its `requestState`), with the answers delivered."""
        state = params.get("requestState")
        exchange = self._exchanges.get(state) if isinstance(state, str) else None
        if exchange is None:
            return None
        if exchange.persona != persona:
            raise SamplingRefused("this requestState belongs to a call of another persona")
        exchange.answer(params.get("inputResponses") or {})
        return exchange

    async def next_of(self, exchange: Exchange, *, on_log: LogSink | None = None) -> dict[str, Any]:
        """The exchange's next answer; meanwhile its upstream call's log lines go to `on_log`."""
        exchange.listening = on_log
        try:
            result = await exchange.next()
        finally:
            exchange.listening = None
        if result.get("resultType") != "input_required":
            self._exchanges.pop(exchange.token, None)
        return result

    # --- answering -------------------------------------------------------------------------------

    async def elicit(self, server: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        if self.settings.elicitation == "deny" or self.policy(server, caller.persona) == "deny":
            raise SamplingRefused(f"elicitation from upstream '{server}' is denied by [sampling] policy")
        client = caller.client
        if client is None or not client.can_elicit or client.send is None:
            raise SamplingRefused(
                f"upstream '{server}' asked the user for input (elicitation), "
                "and this client cannot answer elicitation requests"
            )
        return await client.send(ELICITATION, params)

    async def sample(self, server: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """One sampling request, answered per policy: relayed to the client, or through litellm."""
        policy = self.policy(server, caller.persona)
        client = caller.client
        can_relay = client is not None and client.can_sample and client.send is not None
        record = Record(server=server, persona=caller.persona, request_id=caller.request_id)
        try:
            if policy == "deny":
                raise SamplingRefused(f"sampling for upstream '{server}' is denied by [sampling] policy")
            guard = self.guard
            if guard is not None:  # `sampling` rules: their `tools` globs match the upstream's name
                params = guard.check_sampling(caller.persona, params, name=server)
            if policy == "relay" or (policy == "auto" and can_relay):
                if not can_relay:
                    raise SamplingRefused(
                        f"sampling for upstream '{server}' is set to relay, and this client cannot sample"
                    )
                assert client is not None and client.send is not None
                record.answered_by = "client"
                return await client.send(SAMPLING, params)
            return await self._complete(server, params, caller.persona, record)
        except GatewayError as exc:
            record.outcome = (
                "refused"
                if isinstance(exc, SamplingRefused)
                else "blocked"
                if isinstance(exc, DataBlocked)
                else "error"
            )
            record.error = str(exc)
            raise
        except BaseException as exc:
            record.outcome, record.error = "error", str(exc) or type(exc).__name__
            raise
        finally:
            self._account(record)

    # --- routing ---------------------------------------------------------------------------------

    def chain(self, server: str, persona: str | None, params: Mapping[str, Any]) -> list[str]:
        """Routes to try, in order: the one the request's model preferences pick, then the fallbacks.

        A persona's (else a server's) `routes` list is its own fallback chain, in its order;
        without one, `[sampling].fallbacks` (else every route in file order) is.
        """
        by_persona = self._scope(self.settings.personas, persona or DEFAULT_PERSONA)
        by_server = self._scope(self.settings.servers, server)
        limits = [s.routes for s in (by_persona, by_server) if s is not None and s.routes is not None]

        def allowed(name: str) -> bool:
            return all(name in limit for limit in limits)

        order = limits[0] if limits else (self.settings.fallbacks or list(self.settings.routes))
        order = [r for r in order if allowed(r)]
        if not order:
            raise SamplingRefused(
                f"no sampling route is allowed for persona {persona or DEFAULT_PERSONA!r} "
                f"on server {server!r}"
            )
        candidates = order + [r for r in self.settings.routes if r not in order and allowed(r)]
        first = _preferred(candidates, self.settings.routes, params.get("modelPreferences")) or order[0]
        return [first, *[r for r in order if r != first]]

    # --- budgets ---------------------------------------------------------------------------------

    def _budget(self, persona: str | None) -> SamplingScope | None:
        scope = self._scope(self.settings.personas, persona or DEFAULT_PERSONA)
        if scope is None or (scope.tokens_per_day is None and scope.usd_per_day is None):
            return None
        return scope

    def spent(self, persona: str | None) -> tuple[int, float]:
        tokens, usd = self._spent_today(persona)
        return int(tokens), usd

    def _spent_today(self, persona: str | None) -> list[float]:
        """The running [tokens, usd] of `persona` today, seeded once per day from the audit log."""
        key = (persona or DEFAULT_PERSONA, _today())
        if key not in self._spent:
            self._spent[key] = self._spent_in_log(*key)
        return self._spent[key]

    def _spent_in_log(self, persona: str, day: str) -> list[float]:
        """What the audit log says this persona spent today (budgets survive restarts)."""
        log = self.audit
        if log is None or not Path(log.path).exists():
            return [0.0, 0.0]
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(str(log.path), timeout=1.0)) as db:
                rows = db.execute(
                    "select result from events where kind = 'sampling' and persona = ? and ts >= ?",
                    [persona, day],
                ).fetchall()
        except sqlite3.Error as exc:
            logger.warning("sampling: cannot read today's spend from the audit log: %s", exc)
            return [0.0, 0.0]
        tokens = usd = 0.0
        for (text,) in rows:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                data = json.loads(text)
                tokens += int(data.get("input_tokens", 0)) + int(data.get("output_tokens", 0))
                usd += float(data.get("cost_usd", 0.0))
        return [tokens, usd]

    def _check_budget(self, persona: str | None) -> None:
        scope = self._budget(persona)
        if scope is None:
            return
        tokens, usd = self.spent(persona)
        name = persona or DEFAULT_PERSONA
        if scope.tokens_per_day is not None and tokens >= scope.tokens_per_day:
            raise SamplingRefused(
                f"persona {name!r} has used its sampling budget for today "
                f"({tokens} of {scope.tokens_per_day} tokens); it renews at 00:00 UTC"
            )
        if scope.usd_per_day is not None and usd >= scope.usd_per_day:
            raise SamplingRefused(
                f"persona {name!r} has used its sampling budget for today "
                f"(${_usd(usd)} of ${_usd(scope.usd_per_day)}); it renews at 00:00 UTC"
            )

    # --- the model call --------------------------------------------------------------------------

    async def _complete(
        self, server: str, params: dict[str, Any], persona: str | None, record: Record
    ) -> dict[str, Any]:
        self._check_budget(persona)
        chain = self.chain(server, persona, params)
        usable: list[str] = []
        missing: list[str] = []
        for name in chain:
            variable = self.settings.routes[name].api_key_env
            if variable is not None and not os.environ.get(variable):
                missing.append(f"route '{name}': environment variable {variable} is not set")
                record.tried.append(name)
            else:
                usable.append(name)
        for problem in missing:
            logger.error("sampling: %s", problem)
        if not usable:
            raise SamplingFailed("; ".join(missing))
        request = to_chat_request(params, context=self._context(server, params.get("includeContext")))
        router = await self._ready_router(record)
        cooling = _cooling(router, usable)
        record.cooling = list(cooling)
        for name, why in cooling.items():
            logger.warning("sampling: route '%s' %s", name, why)
        try:
            response = await router.acompletion(model=usable[0], fallbacks=usable[1:], **request)
        except Exception as exc:
            record.tried.extend(usable)
            raise SamplingFailed(_describe_llm_error(exc, usable, missing, cooling)) from exc
        hidden = getattr(response, "_hidden_params", None) or {}
        headers = hidden.get("additional_headers") or {}
        used = str(headers.get("x-litellm-model-group") or usable[0])
        with contextlib.suppress(ValueError, TypeError):
            record.retries = int(headers.get("x-litellm-attempted-retries") or 0)
        record.tried.extend(usable[: usable.index(used) + 1] if used in usable else [used])
        record.route = used
        usage = getattr(response, "usage", None)
        record.input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        record.output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        record.cost_usd = float(hidden.get("response_cost") or 0.0)
        result = from_chat_response(response, tools=bool(params.get("tools")))
        record.model = str(result.get("model"))
        return result

    def _context(self, server: str, include: Any) -> str | None:
        if include not in ("thisServer", "allServers"):
            return None
        return self._instructions(server if include == "thisServer" else None) or None

    async def _ready_router(self, record: Record) -> Any:
        """The Router, built once on first use in a worker thread.

        Importing litellm takes seconds; done on the event loop it would stall every other
        call, ping and stream of the gateway meanwhile. The wait is recorded as `load_ms`.
        """
        if self._router is not None:
            return self._router
        started = time.perf_counter()
        async with self._router_lock:
            if self._router is None:
                self._router = await anyio.to_thread.run_sync(self._build_router)
        record.load_ms = (time.perf_counter() - started) * 1000
        return self._router

    def _build_router(self) -> Any:
        """litellm's Router over every route (the import is the expensive part)."""
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm
        from litellm.router import Router

        litellm.suppress_debug_info = True
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        model_list = [
            {
                "model_name": name,
                "litellm_params": _litellm_params(route, self.settings.timeout),
                "model_info": {"id": name},  # the route's name is its deployment id: cooldowns name routes
            }
            for name, route in self.settings.routes.items()
        ]
        return Router(
            model_list=model_list,
            num_retries=self.settings.retries,
            timeout=self.settings.timeout,
            cooldown_time=self.settings.cooldown,
            max_fallbacks=max(1, len(model_list)),
        )

    # --- accounting ------------------------------------------------------------------------------

    def _account(self, record: Record) -> None:
        latency = (time.perf_counter() - record.started) * 1000
        self.records.append(record)
        del self.records[:-100]
        if record.answered_by == "llm" and record.outcome == "ok":
            spent = self._spent_today(record.persona)
            spent[0] += record.input_tokens + record.output_tokens
            spent[1] += record.cost_usd
        logger.info(
            "sampling for %s (persona %s): %s via %s, %d+%d tokens, $%.6f, %.0f ms",
            record.server,
            record.persona or "-",
            record.outcome,
            record.route or record.answered_by,
            record.input_tokens,
            record.output_tokens,
            record.cost_usd,
            latency,
        )
        log = self.audit
        if log is None:
            return
        from mcpgw import audit as audit_mod

        log.record(
            {
                "ts": audit_mod.now(),
                "request_id": record.request_id or uuid.uuid4().hex,
                "kind": "sampling",
                "method": SAMPLING,
                "persona": record.persona or DEFAULT_PERSONA,
                "principal": None,
                "client": None,
                "protocol": None,
                "server": record.server,
                "name": record.route or record.answered_by,
                "outcome": record.outcome,
                "error": log.redactor.text(record.error)[:2000] if record.error else None,
                "latency_ms": round(latency, 3),
                "arg_bytes": 0,
                "result_bytes": 0,
                "arguments": None,
                "result": json.dumps(record.as_dict()),
            }
        )


# --- routes --------------------------------------------------------------------------------------


def _litellm_params(route: SamplingRoute, timeout: float) -> dict[str, Any]:
    params: dict[str, Any] = {"model": route.model, "timeout": route.timeout or timeout}
    if route.retries is not None:
        params["num_retries"] = route.retries  # a deployment's own retries override the Router's
    if route.api_base:
        params["api_base"] = route.api_base
    if route.api_key_env:
        params["api_key"] = os.environ.get(route.api_key_env, "")
    if route.input_cost_per_token is not None:
        params["input_cost_per_token"] = route.input_cost_per_token
    if route.output_cost_per_token is not None:
        params["output_cost_per_token"] = route.output_cost_per_token
    return params


def _preferred(allowed: list[str], routes: Mapping[str, SamplingRoute], preferences: Any) -> str | None:
    """The route a request's model preferences pick: the first hint that matches, else the best priorities."""
    if not isinstance(preferences, Mapping):
        return None
    for hint in preferences.get("hints") or []:
        wanted = str(hint.get("name") or "").lower() if isinstance(hint, Mapping) else ""
        if not wanted:
            continue
        for name in allowed:
            route = routes[name]
            haystack = [name.lower(), route.model.lower(), *(h.lower() for h in route.hints)]
            if any(wanted in item for item in haystack):
                return name
    weights = {
        key: float(preferences[f"{key}Priority"])
        for key in ("cost", "speed", "intelligence")
        if isinstance(preferences.get(f"{key}Priority"), int | float)
    }
    if not any(weights.values()):
        return None

    def score(name: str) -> float:
        route = routes[name]
        return sum(weight * float(getattr(route, key)) for key, weight in weights.items())

    return max(allowed, key=score)  # max keeps the first of equals: file order breaks ties


def _cooling(router: Any, names: list[str]) -> dict[str, str]:
    """The routes among `names` that litellm's Router is skipping, each with why and for how long.

    The Router cools a route down after some failures (e.g. HTTP 401/404, or a failure storm) and
    then refuses it without sending anything until the cooldown ends, even once the model is
    healthy again; without this the user would only see litellm's "No deployments available".
    Read through the Router's `health().cooldowns` store; a Router without it reports nothing.
    """
    try:
        active = router.health().cooldowns.get_active_cooldowns(names, None)
    except Exception as exc:  # a litellm without this API: cooldowns go unreported, calls still work
        logger.debug("sampling: cannot read litellm's cooldowns: %s", exc)
        return {}
    now = time.time()
    out: dict[str, str] = {}
    for name, value in active:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            left = max(0.0, float(value["timestamp"]) + float(value["cooldown_time"]) - now)
            status = value.get("status_code") or "an error"
            out[str(name)] = (
                f"is cooling down after a failure (HTTP {status}): litellm skips it for {left:.0f}s more "
                "([sampling] cooldown)"
            )
    return out


def _describe_llm_error(
    exc: Exception, usable: list[str], missing: list[str], cooling: Mapping[str, str] | None = None
) -> str:
    """One readable line per failure from litellm's (long, multi-line) error text."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = first.removeprefix("litellm.")
    cooled = [f"route '{name}' {why}" for name, why in (cooling or {}).items()]
    if cooled and first.startswith("No deployments available"):
        first = "the routes are cooling down after recent failures"  # the details follow
    also = [line.strip() for line in text.splitlines() if "also failed" in line]
    parts = [
        f"every sampling route failed (tried {', '.join(usable)}): {first[:300]}",
        *cooled,
        *also[:3],
        *missing,
    ]
    return "; ".join(parts)


# --- MCP sampling <-> chat completions -----------------------------------------------------------


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return [content] if isinstance(content, dict) else []


def _chat_part(block: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        url = f"data:{block.get('mimeType', 'image/png')};base64,{block.get('data', '')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "audio":
        fmt = str(block.get("mimeType", "audio/wav")).rsplit("/", 1)[-1]
        return {"type": "input_audio", "input_audio": {"data": block.get("data", ""), "format": fmt}}
    return None


def _result_text(block: Mapping[str, Any]) -> str:
    parts = [str(b.get("text", "")) for b in _blocks(block.get("content")) if b.get("type") == "text"]
    if block.get("structuredContent") is not None:
        parts.append(json.dumps(block["structuredContent"]))
    return "\n".join(parts)


def to_chat_request(params: Mapping[str, Any], *, context: str | None = None) -> dict[str, Any]:
    """An MCP `sampling/createMessage` request as chat-completions arguments."""
    messages: list[dict[str, Any]] = []
    system = "\n\n".join(p for p in (params.get("systemPrompt"), context) if p)
    if system:
        messages.append({"role": "system", "content": system})
    for message in params.get("messages") or []:
        role = message.get("role", "user")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for block in _blocks(message.get("content")):
            if block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {})
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
            elif block.get("type") == "tool_result":
                messages.append(
                    {"role": "tool", "tool_call_id": block.get("toolUseId"), "content": _result_text(block)}
                )
            elif (part := _chat_part(block)) is not None:
                parts.append(part)
        if calls:
            text = " ".join(p["text"] for p in parts if p["type"] == "text")
            messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
        elif parts:
            only_text = all(p["type"] == "text" for p in parts)
            content: Any = "\n".join(p["text"] for p in parts) if only_text else parts
            messages.append({"role": role, "content": content})
    request: dict[str, Any] = {"messages": messages, "max_tokens": int(params.get("maxTokens") or 1024)}
    if params.get("temperature") is not None:
        request["temperature"] = params["temperature"]
    if params.get("stopSequences"):
        request["stop"] = list(params["stopSequences"])
    tools = params.get("tools")
    if tools:
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description") or "",
                    "parameters": tool.get("inputSchema") or {"type": "object"},
                },
            }
            for tool in tools
        ]
        mode = (params.get("toolChoice") or {}).get("mode")
        if mode in ("auto", "required", "none"):
            request["tool_choice"] = mode
    return request


_STOP_REASONS = {
    "stop": "endTurn",
    "length": "maxTokens",
    "tool_calls": "toolUse",
    "function_call": "toolUse",
}


def from_chat_response(response: Any, *, tools: bool) -> dict[str, Any]:
    """A chat-completions response as an MCP `CreateMessageResult` (a block list when tools were offered)."""
    choice = response.choices[0]
    message = choice.message
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": str(message.content)})
    for call in getattr(message, "tool_calls", None) or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            arguments = {"_raw": call.function.arguments}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    stop = _STOP_REASONS.get(str(choice.finish_reason), str(choice.finish_reason or "endTurn"))
    result: dict[str, Any] = {"role": "assistant", "model": str(response.model or ""), "stopReason": stop}
    result["content"] = blocks if tools else blocks[0]
    return result


# --- stats (the CLI) -----------------------------------------------------------------------------


def spend(db: Any, *, since: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Sampling requests, tokens and cost per persona and per route, from the audit log."""
    sql = "select persona, name, outcome, result from events where kind = 'sampling'"
    rows = list(db.query(sql + (" and ts >= ?" if since else ""), [since] if since else []))
    out: dict[str, list[dict[str, Any]]] = {}
    for group, column in (("persona", "persona"), ("route", "name")):
        buckets: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = str(row[column] or "-")
            bucket = buckets.setdefault(
                key, {"key": key, "requests": 0, "errors": 0, "tokens": 0, "cost_usd": 0.0}
            )
            bucket["requests"] += 1
            bucket["errors"] += row["outcome"] != "ok"
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                data = json.loads(row["result"] or "{}")
                bucket["tokens"] += int(data.get("input_tokens", 0)) + int(data.get("output_tokens", 0))
                bucket["cost_usd"] = round(bucket["cost_usd"] + float(data.get("cost_usd", 0.0)), 8)
        out[group] = [buckets[k] for k in sorted(buckets)]
    return out
