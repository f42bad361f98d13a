"""Sampling and elicitation: answering upstreams that ask their client for an LLM completion or for input.

Owns the `Sampler`, what the gateway and its upstream hooks call: one
sampling request answered per policy (relayed to the client, or through a
model), one elicitation request relayed, one `sampling` audit row per request
(route used, routes tried, tokens, cost, latency, outcome), and both shapes of
request: handshake-era `sampling/createMessage` / `elicitation/create` sent to
mcpgw's upstream session, and 2026-07-28 `input_required` results, fulfilled
and retried until the call completes.
Which requests reach it, in which era, and which go to the client instead
(`input_required` results handed to a 2026-07-28 client, roots answered from the
registry) is the bridge's to decide (`mcpgw.bridge`); the sampler answers what
reaches it, and screens what the bridge hands a client (`hand_over`).

The data rules of direction `sampling` apply in one place, `Sampler.screen`,
once per request, whichever way it leaves mcpgw: to a model, relayed to a
handshake-era client, or handed to a 2026-07-28 client in an `input_required`
result, from an upstream of either era. They cover elicitation requests too:
the `sampling` direction is what an upstream asks the client, whether for a
completion or for the user's input (a rule's `tools` globs match the asking
upstream's name). `results` rules apply to what a call returns, as ever; an
`input_required` result handed to a 2026-07-28 client is one such result, so
the pipeline's `results` stage reads it too, after the `sampling` rules here.

The parts it puts together, one job each:
- `policy`: who answers (`relay`, `llm`, `auto`, `deny`) per server and
  persona, the capabilities declared to upstreams, and the chain of routes;
- `llm`: the litellm boundary (lazy import, the Router, cooldowns, errors);
- `convert`: MCP sampling messages, tools and tool choice <-> chat completions;
- `budget`: per-persona daily token and dollar budgets, reserved before a model
  call and settled with its real usage after;
- `mcpgw.audit.spend`: the spend read back from the audit log;
- `drafting`: the one model call of `mcpgw personas draft` (the guard rails after it are
  `mcpgw.catalog.drafts`').

Which downstream call a handshake-era sampling request belongs to: the
upstream session is shared, and stdio carries no link between the two, so the
request is attributed to the calls in flight on that upstream (`inflight`, the
registry the log relay reads too). When calls from different personas are in
flight at once the request is refused rather than charged to the wrong persona.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcpgw.audit.step import Outcome
from mcpgw.config import DEFAULT_PERSONA, Registry, SamplingPolicy
from mcpgw.errors import DataBlocked, GatewayError, SamplingRefused
from mcpgw.observe import tracing
from mcpgw.sampling import policy as rules
from mcpgw.sampling.budget import Budgets, prompt_tokens
from mcpgw.sampling.convert import max_tokens
from mcpgw.sampling.llm import Models
from mcpgw.upstream.inflight import Caller, InFlight

if TYPE_CHECKING:
    from mcpgw.audit import AuditLog
    from mcpgw.cluster.budgets import SharedBudgets
    from mcpgw.observe.metrics import Metrics
    from mcpgw.security.dataguard import Guard
    from mcpgw.upstream import Upstream

logger = logging.getLogger("mcpgw.sampling")

SAMPLING = "sampling/createMessage"
ELICITATION = "elicitation/create"


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
    outcome: Outcome = Outcome.OK
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
        metrics: Metrics | None = None,
        shared_budgets: SharedBudgets | None = None,
    ) -> None:
        self.inflight = inflight if inflight is not None else InFlight()
        """The calls in flight per upstream, shared with the gateway's log relay."""
        self.settings = registry.sampling
        self.guard = guard
        """The gateway's data rules (`dataguard`), applied to what goes to a model or a client."""
        self.registry = registry
        self.audit = audit
        self.metrics = metrics
        self._upstreams: Mapping[str, Upstream] = upstreams if upstreams is not None else {}
        """The gateway's upstreams (filled as it builds them): their instructions for `includeContext`."""
        self._models = Models(self.settings)
        """litellm's Router, loaded on the first request that needs a model."""
        self._budgets = Budgets(
            self.settings, audit=audit.store if audit is not None else None, shared=shared_budgets
        )
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

    def policy(self, server: str, persona: str | None) -> SamplingPolicy:
        """Who answers this server's requests for this persona (see `policy.who_answers`)."""
        return rules.who_answers(self.settings, server, persona)

    def answers_sampling(self, server: str) -> bool:
        """Whether mcpgw declares sampling to this upstream (see `policy.declares_sampling`)."""
        return rules.declares_sampling(self.settings, server)

    def answers_elicitation(self, server: str) -> bool:
        """Whether mcpgw declares elicitation to this upstream (see `policy.declares_elicitation`)."""
        return rules.declares_elicitation(self.settings, server)

    # --- handshake era: requests sent to mcpgw's upstream session --------------------------------

    async def on_sampling(self, server: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer an upstream's `sampling/createMessage` (raises `SamplingError` when it cannot)."""
        try:
            caller = self.inflight.requester(server)
        except SamplingRefused as exc:
            self._account(Record(server=server, persona=None, outcome=Outcome.REFUSED, error=str(exc)))
            raise
        return await self.sample(server, params, caller)

    async def on_elicitation(self, server: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.elicit(server, params, self.inflight.requester(server))

    # --- what leaves mcpgw: the one place the `sampling` data rules apply -------------------------

    def screen(self, server: str, params: dict[str, Any], persona: str | None) -> dict[str, Any]:
        """What an upstream asks, after the `sampling` data rules: unchanged, redacted, or `DataBlocked`.

        Every sampling and elicitation request passes here once before it leaves mcpgw, whichever
        way it leaves: to a model, relayed to a handshake-era client, or handed to a 2026-07-28
        client in an `input_required` result, from an upstream of either era. The `sampling`
        direction covers both kinds of request (what an upstream asks the client); a rule's
        `tools` globs match the asking upstream's name.
        """
        guard = self.guard
        if guard is None:
            return params
        checked: dict[str, Any] = guard.check("sampling", persona, server, params)
        return checked

    def _refuse_denied(self, method: str, server: str, persona: str | None) -> None:
        """`SamplingRefused` when policy denies this kind of request from this server to this persona."""
        denied = self.policy(server, persona) == "deny"
        if method == ELICITATION and (denied or self.settings.elicitation == "deny"):
            raise SamplingRefused(f"elicitation from upstream '{server}' is denied by [sampling] policy")
        if method == SAMPLING and denied:
            raise SamplingRefused(f"sampling for upstream '{server}' is denied by [sampling] policy")

    def hand_over(self, server: str, requests: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """The input requests a 2026-07-28 client answers itself, as they leave for it: screened.

        Their client answers them, on its retry; mcpgw still applies what it applies on every other
        way out (policy and the `sampling` data rules), and writes each sampling request's row
        once all of them may leave. Raises `DataBlocked` or `SamplingRefused` when one may not:
        then nothing is handed over, and only that request's row is written.
        """
        out: dict[str, Any] = {}
        handed: list[Record] = []
        for key, request in requests.items():
            method = request.get("method") if isinstance(request, dict) else None
            params = request.get("params") if isinstance(request, dict) else None
            if method not in (SAMPLING, ELICITATION) or not isinstance(params, dict):
                out[key] = request
                continue
            record = Record(
                server=server, persona=caller.persona, request_id=caller.request_id, answered_by="client"
            )
            try:
                self._refuse_denied(method, server, caller.persona)
                out[key] = {**request, "params": self.screen(server, params, caller.persona)}
            except GatewayError as exc:
                if method == SAMPLING:
                    self._account(_failed(record, exc))
                raise
            if method == SAMPLING:
                handed.append(record)
        for record in handed:
            self._account(record)
        return out

    # --- answering -------------------------------------------------------------------------------

    async def elicit(self, server: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._refuse_denied(ELICITATION, server, caller.persona)
        client = caller.client
        if client is None or not client.can_elicit or client.send is None:
            raise SamplingRefused(
                f"upstream '{server}' asked the user for input (elicitation), "
                "and this client cannot answer elicitation requests"
            )
        return await client.send(ELICITATION, self.screen(server, params, caller.persona))

    async def sample(self, server: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """One sampling request, answered per policy: relayed to the client, or through litellm."""
        policy = self.policy(server, caller.persona)
        client = caller.client
        can_relay = client is not None and client.can_sample and client.send is not None
        record = Record(server=server, persona=caller.persona, request_id=caller.request_id)
        with (
            tracing.attached(caller.trace),
            tracing.span(
                SAMPLING, kind="server", attributes=_sampling_attributes(server, caller.persona, params)
            ) as span,
            self._accounted(record),
            _traced(span, record),
        ):
            self._refuse_denied(SAMPLING, server, caller.persona)
            params = self.screen(server, params, caller.persona)
            if policy == "relay" or (policy == "auto" and can_relay):
                if not can_relay:
                    raise SamplingRefused(
                        f"sampling for upstream '{server}' is set to relay, and this client cannot sample"
                    )
                assert client is not None and client.send is not None
                record.answered_by = "client"
                return await client.send(SAMPLING, params)
            return await self._complete(server, params, caller.persona, record)

    # --- the model call --------------------------------------------------------------------------

    async def _complete(
        self, server: str, params: dict[str, Any], persona: str | None, record: Record
    ) -> dict[str, Any]:
        """Answer through a model: along the routes policy allows, within the persona's budget.

        The budget is held before anything is sent (the request's `maxTokens`, its prompt's
        estimated tokens, their price on the dearest route of the chain), settled with what the
        model reports once it answers, and released if it does not (see `budget`).
        """
        chain = rules.chain(self.settings, server, persona, params)
        context = self._context(server, params.get("includeContext"))
        prompt, output = prompt_tokens(params, context=context), max_tokens(params)
        usd = self._models.worst_cost(chain, input_tokens=prompt, output_tokens=output)
        async with self._budgets.holding(persona, tokens=prompt + output, usd=usd) as hold:
            answer = await self._models.complete(chain, params, record, context=context)
            used = record.input_tokens + record.output_tokens
            await self._budgets.settled(hold, tokens=used, usd=record.cost_usd)
        return answer

    def _context(self, server: str, include: Any) -> str | None:
        if include not in ("thisServer", "allServers"):
            return None
        return self._instructions(server if include == "thisServer" else None) or None

    # --- accounting ------------------------------------------------------------------------------

    @contextmanager
    def _accounted(self, record: Record) -> Iterator[None]:
        """Run one sampling request's work; its outcome is read from how the work ends, then recorded."""
        try:
            yield
        except BaseException as exc:
            _failed(record, exc)
            raise
        finally:
            self._account(record)

    def _account(self, record: Record) -> None:
        latency = (time.perf_counter() - record.started) * 1000
        self.records.append(record)
        del self.records[:-100]
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
        if self.metrics is not None:
            self.metrics.sampled(
                route=record.route or record.answered_by,
                persona=record.persona,
                outcome=record.outcome,
                input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                cost_usd=record.cost_usd,
            )
        log = self.audit
        if log is None:
            return
        from mcpgw.audit import Kind

        log.event(
            Kind.SAMPLING,
            request_id=record.request_id,
            method=SAMPLING,
            persona=record.persona or DEFAULT_PERSONA,
            server=record.server,
            name=record.route or record.answered_by,
            outcome=record.outcome,
            error=record.error,
            latency_ms=latency,
            result=record.as_dict(),
        )


def _sampling_attributes(server: str, persona: str | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """An upstream's sampling request as its span says it (the MCP conventions, and mcpgw's own)."""
    attributes: dict[str, Any] = {"mcp.method.name": SAMPLING, "mcpgw.server": server}
    if persona is not None:
        attributes["mcpgw.persona"] = persona
    if isinstance(params.get("maxTokens"), int):
        attributes["gen_ai.request.max_tokens"] = params["maxTokens"]
    return attributes


@contextmanager
def _traced(span: Any, record: Record) -> Iterator[None]:
    """What the sampling request came to, on its span once it is accounted."""
    try:
        yield
    finally:
        tracing.annotate(
            span,
            {
                "mcpgw.sampling.outcome": record.outcome.value,
                "mcpgw.sampling.answered_by": record.route or record.answered_by,
                "gen_ai.usage.input_tokens": record.input_tokens or None,
                "gen_ai.usage.output_tokens": record.output_tokens or None,
            },
        )


def _failed(record: Record, exc: BaseException) -> Record:
    """`record`, its outcome and error set from the exception that ended its request."""
    if isinstance(exc, GatewayError):
        record.outcome = (
            Outcome.REFUSED
            if isinstance(exc, SamplingRefused)
            else Outcome.BLOCKED
            if isinstance(exc, DataBlocked)
            else Outcome.ERROR
        )
        record.error = str(exc)
    else:
        record.outcome, record.error = Outcome.ERROR, str(exc) or type(exc).__name__
    return record
