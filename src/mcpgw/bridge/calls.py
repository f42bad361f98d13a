"""Calls forwarded across the protocol eras: `Bridge.request`, the gateway's one way to send them upstream.

Owns: deciding where each question an upstream asks mid-call goes, in either
era, for a client of either era:
- a 2026-07-28 upstream answers with `input_required`: mcpgw answers it (the
  sampler, for sampling and elicitation; the registry, for roots) and retries,
  or, when the 2026-07-28 client answers such requests itself
  (`passes_through`), hands the client the requests that are its to answer
  and keeps the rest (roots) for itself, in a sealed `requestState`;
- a handshake-era upstream sends mcpgw `sampling/createMessage` or
  `elicitation/create`: the sampler answers it for the call in flight, relaying
  to a handshake-era client on its channel, or to a 2026-07-28 client through
  an `Exchange` (`needs_exchange`), whose requests reach the client as
  `input_required` results;
- what the upstream gets back from the client: only answers to the requests
  mcpgw put to that client (the keys its sealed state lists), never an answer
  that is mcpgw's own (roots), and nothing a client adds to a first call.
The sampler answers questions (policy, model routes, budgets); this module
decides which of them reach it, and which reach the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio.abc
import mcp_types as types
from mcp_types import CLIENT_CAPABILITIES_META_KEY

from mcpgw import audit
from mcpgw.bridge.exchange import EXCHANGE_KEEP, Exchange
from mcpgw.bridge.state import Binding, Round, StateSeal
from mcpgw.catalog import personas as personas_mod
from mcpgw.config import Registry
from mcpgw.errors import InvalidRequest, SamplingFailed, SamplingRefused
from mcpgw.observe import tracing
from mcpgw.sampling import ELICITATION, SAMPLING, Sampler
from mcpgw.upstream import Upstream
from mcpgw.upstream.answers import APPS_EXTENSION, as_uri
from mcpgw.upstream.inflight import Caller, ClientChannel, InFlight, LogSink
from mcpgw.upstream.session import ProgressRelay

logger = logging.getLogger("mcpgw.bridge")

ROOTS = "roots/list"

Retry = Callable[[dict[str, Any], Any], Awaitable[dict[str, Any]]]
"""Sends the call again with these `inputResponses` and the upstream's `requestState` (None: none)."""


class Bridge:
    """Every call of one gateway that may need client input on its way, in either era.

    Built by the `Gateway` with what it reads: the registry (roots, personas), the sampler
    (policy, and the answers), the in-flight registry the upstream call is entered in, and
    `tasks`, the gateway's task group once it runs (an exchange outlives one client request).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        sampler: Sampler,
        inflight: InFlight,
        tasks: Callable[[], anyio.abc.TaskGroup | None],
        seal: StateSeal | None = None,
    ) -> None:
        self.registry = registry
        self.sampler = sampler
        self.inflight = inflight
        self._tasks = tasks
        self.seal = seal if seal is not None else StateSeal()
        self._exchanges: dict[str, Exchange] = {}
        self._declared: dict[tuple[Any, ...], dict[str, Any]] = {}
        """`capabilities` per server, persona and what the client can do: they read only the registry
        and the sampler, so each is built once per reload (servers x personas x 8 at most)."""

    def reconfigure(self, registry: Registry, *, sampler: Sampler) -> None:
        """A reloaded registry: new requests read it; exchanges under way keep their state."""
        self.registry = registry
        self.sampler = sampler
        self._declared = {}

    # --- the entry point -------------------------------------------------------------------------

    async def request(
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
        """Send a request whose upstream may ask for sampling, elicitation or roots on the way.

        The upstream request counts as in flight (`inflight`) for as long as it runs, once,
        whichever path it takes; a client's retry of an exchange sends nothing upstream itself.
        """
        step = audit.current()
        caller = Caller(
            persona=personas_mod.resolve(self.registry, persona),
            client=client,
            request_id=step.request_id if step is not None else None,
            on_log=on_log,
            trace=tracing.context(),
        )
        binding: Binding | None = None  # only a state sealed or opened needs it: made then
        if "requestState" in params or "inputResponses" in params:
            binding = self._binding(upstream, method, params, caller)
            params, resumed, answered = self._opened(params, binding)
        else:  # a first call: nothing of mcpgw's to take out (nothing below writes into `params`)
            resumed, answered = None, {}
        # A handshake-era client of an upstream that speaks both eras gets its handshake-era side,
        # as when connected directly (`upstream.companion`): its questions reach the client as asked.
        handshake = client is not None and not client.modern and upstream.serves_handshake_callers()
        params = self._with_capabilities(upstream, params, caller)
        if resumed is not None and resumed.exchange is not None:
            exchange = self._exchanges.get(resumed.exchange)
            if exchange is None:
                raise InvalidRequest("the call this requestState continued has ended: call the tool again")
            exchange.answer(answered)
            assert binding is not None
            return await self._next_of(exchange, binding, on_log=on_log, on_progress=on_progress)
        if resumed is None and self.needs_exchange(upstream, caller) and (tasks := self._tasks()) is not None:
            exchange, runs_as = self._open_exchange(caller, timeout=timeout or upstream.timeout)
            tasks.start_soon(self._run_exchange, exchange, upstream, method, params, runs_as, timeout)
            binding = binding or self._binding(upstream, method, params, caller)
            return await self._next_of(exchange, binding, on_log=on_log, on_progress=on_progress)
        inflight = self.inflight
        inflight.add(upstream.name, caller)  # `inflight.calling`, without its generator
        try:
            result = await upstream.request(
                method, params, timeout=timeout, on_progress=on_progress, handshake_caller=handshake
            )
            if result.get("resultType") != "input_required":
                return result

            async def retry(responses: dict[str, Any], state: Any) -> dict[str, Any]:
                again = {**params, "inputResponses": responses}
                if state is not None:
                    again["requestState"] = state
                else:
                    again.pop("requestState", None)
                return await upstream.request(method, again, timeout=timeout, on_progress=on_progress)

            binding = binding or self._binding(upstream, method, params, caller)
            return await self._fulfil(upstream.name, result, caller, retry, binding)
        finally:
            inflight.discard(upstream.name, caller)

    def _binding(self, upstream: Upstream, method: str, params: Mapping[str, Any], caller: Caller) -> Binding:
        client = caller.client
        return Binding.of(
            upstream.name,
            method,
            params,
            persona=caller.persona,
            principal=client.principal if client is not None else None,
        )

    def _opened(
        self, params: Mapping[str, Any], binding: Binding
    ) -> tuple[dict[str, Any], Round | None, dict[str, Any]]:
        """The params to send upstream, the round a client's retry continues, and its answers mcpgw asked for.

        A client's `inputResponses` reach the upstream only on a retry with a `requestState`
        mcpgw sealed for this caller and call, and only for the requests that state says
        mcpgw put to the client; mcpgw's own answers (roots) come from the state, never
        from the client. Anything else the client sent along is dropped.
        """
        sent = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
        responses = params.get("inputResponses")
        given: Mapping[str, Any] = responses if isinstance(responses, Mapping) else {}
        state = params.get("requestState")
        if state is None:  # an explicit null counts as absent, as the SDK's boundary has it
            if given:
                logger.warning("dropped input responses %s: mcpgw asked this call for none", sorted(given))
            return sent, None, {}
        resumed = self.seal.open(state, binding)
        answered = {k: v for k, v in given.items() if k in resumed.asked}
        if len(answered) < len(given):
            dropped = sorted(set(given) - set(answered))
            logger.warning("dropped input responses %s: mcpgw did not ask the client for them", dropped)
        if resumed.exchange is None:
            merged = {**answered, **resumed.answers}
            if merged:
                sent["inputResponses"] = merged
            if resumed.upstream_state is not None:
                sent["requestState"] = resumed.upstream_state
        return sent, resumed, answered

    # --- 2026-07-28 upstream: input_required results ---------------------------------------------

    def capabilities(self, server: str, caller: Caller) -> dict[str, Any]:
        """The client capabilities a 2026-07-28 upstream is told for this call: what can be answered.

        Sampling when the caller can sample and policy relays to it, or when a model route answers
        (`llm`/`auto` with `[sampling.routes]`); elicitation when the caller can elicit and it is
        not denied; roots always (mcpgw answers them from the registry); the MCP Apps extension
        when the caller renders apps (mcpgw carries `ui://` resources, so the upstream may offer
        them; `apps = false` on the server withholds it). A 2026-07-28 upstream must
        judge each request by these (and reject with -32021 what needs one that is missing), so
        they are the caller's, not the union the shared session was opened with.
        """
        client = caller.client
        sampler = self.sampler
        policy = sampler.policy(server, caller.persona)
        caps: dict[str, Any] = {"roots": {}}  # mcpgw answers them, from the registry
        if client is not None and client.apps and self._declares_apps(server):
            caps["extensions"] = dict(APPS_EXTENSION)
        if client is None or policy == "deny":
            return caps
        relays = client.can_sample and policy in ("relay", "auto")
        if relays or (bool(sampler.settings.routes) and policy in ("llm", "auto")):
            caps["sampling"] = {}
        if client.can_elicit and sampler.settings.elicitation != "deny":
            caps["elicitation"] = {}
        return caps

    def _declares_apps(self, server: str) -> bool:
        server_config = self.registry.servers.get(server)
        return server_config is None or server_config.apps

    def _with_capabilities(
        self, upstream: Upstream, params: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        """`params` with the caller's capabilities in `_meta`, for a 2026-07-28 upstream (kept by the
        session's stamp: `_compat.keep_request_capabilities`)."""
        client = caller.client
        if client is None or upstream.era != "stateless":
            return params
        key = (upstream.name, caller.persona, client.can_sample, client.can_elicit, client.apps)
        capabilities = self._declared.get(key)
        if capabilities is None:
            capabilities = self._declared[key] = self.capabilities(upstream.name, caller)
        meta = params.get("_meta")
        meta = {**meta} if isinstance(meta, dict) else {}
        meta[CLIENT_CAPABILITIES_META_KEY] = capabilities  # shared: read and sent, never written into
        return {**params, "_meta": meta}

    def passes_through(self, server: str, result: Mapping[str, Any], caller: Caller) -> bool:
        """A 2026-07-28 client answers the input requests itself: policy relay, or auto and it can."""
        client = caller.client
        if client is None or not client.modern:
            return False
        sampler = self.sampler
        policy = sampler.policy(server, caller.persona)
        for request in (result.get("inputRequests") or {}).values():
            method = request.get("method") if isinstance(request, dict) else None
            if method == ELICITATION and client.can_elicit:
                return sampler.settings.elicitation != "deny" and policy != "deny"
            if method == SAMPLING and (policy == "relay" or (policy == "auto" and client.can_sample)):
                return True
        return False

    async def _fulfil(
        self, server: str, result: dict[str, Any], caller: Caller, retry: Retry, binding: Binding
    ) -> dict[str, Any]:
        """Answer `input_required` results and retry until the call completes (or goes to the client)."""
        rounds = 0
        max_rounds = self.sampler.settings.max_rounds
        while result.get("resultType") == "input_required":
            if self.passes_through(server, result, caller):
                return self._to_client(server, result, caller, binding)
            rounds += 1
            if rounds > max_rounds:
                raise SamplingFailed(f"upstream '{server}' still asked for input after {max_rounds} rounds")
            responses: dict[str, Any] = {}
            for key, request in (result.get("inputRequests") or {}).items():
                method = request.get("method") if isinstance(request, dict) else None
                params = request.get("params") or {} if isinstance(request, dict) else {}
                if method == SAMPLING:
                    responses[key] = await self.sampler.sample(server, params, caller)
                elif method == ELICITATION:
                    responses[key] = await self.sampler.elicit(server, params, caller)
                elif method == ROOTS:
                    responses[key] = self.roots_answer(server)
                else:
                    raise SamplingRefused(
                        f"upstream '{server}' asked for {method!r}, which mcpgw cannot answer"
                    )
            result = await retry(responses, result.get("requestState"))
        return result

    def _to_client(
        self, server: str, result: dict[str, Any], caller: Caller, binding: Binding
    ) -> dict[str, Any]:
        """The result for a 2026-07-28 client that answers it: its requests, and a sealed state.

        Roots asked alongside stay mcpgw's to answer: they are taken out of what the client
        sees (an mcp client without a roots callback would fail the call, and the roots are
        not its to give); mcpgw's answers ride in the state and go back upstream on the retry.
        The client's requests leave through the sampler (`Sampler.hand_over`), as every sampling
        and elicitation request that leaves mcpgw does: policy and the `sampling` data rules.
        """
        requests = result.get("inputRequests")
        requests = requests if isinstance(requests, dict) else {}
        ours = {k for k, r in requests.items() if isinstance(r, dict) and r.get("method") == ROOTS}
        theirs = self.sampler.hand_over(server, {k: r for k, r in requests.items() if k not in ours}, caller)
        round = Round(
            asked=frozenset(theirs),
            answers={key: self.roots_answer(server) for key in sorted(ours)},
            upstream_state=result.get("requestState"),
        )
        return {**result, "inputRequests": theirs, "requestState": self.seal.seal(binding, round)}

    def roots_answer(self, server: str) -> dict[str, Any]:
        """What mcpgw answers an upstream's roots request with, in either era: the registry's roots."""
        server_config = self.registry.servers.get(server)
        roots = server_config.roots if server_config is not None else []
        return {"roots": [{"uri": as_uri(root)} for root in roots]}

    # --- handshake-era upstream, 2026-07-28 client -----------------------------------------------

    def needs_exchange(self, upstream: Upstream, caller: Caller) -> bool:
        """Whether this call must be able to hand upstream requests to a 2026-07-28 client."""
        client = caller.client
        if client is None or not client.modern or upstream.era != "handshake":
            return False
        sampler, server = self.sampler, upstream.name
        policy = sampler.policy(server, caller.persona)
        samples = client.can_sample and policy in ("relay", "auto") and sampler.answers_sampling(server)
        elicits = (
            client.can_elicit
            and sampler.settings.elicitation != "deny"
            and sampler.answers_elicitation(server)
        )
        return samples or elicits

    def _open_exchange(self, caller: Caller, *, timeout: float) -> tuple[Exchange, Caller]:
        """A new exchange, and the caller the upstream call runs as (its client answers via the exchange)."""
        now = time.monotonic()
        for key, old in list(self._exchanges.items()):
            if old.finished_at is not None and now - old.finished_at > EXCHANGE_KEEP:
                del self._exchanges[key]  # finished, and its client never came back for the result
        exchange = Exchange(timeout=timeout)
        self._exchanges[exchange.id] = exchange
        client = caller.client
        assert client is not None
        relayed = ClientChannel(
            can_sample=client.can_sample,
            can_elicit=client.can_elicit,
            send=exchange.ask,
            principal=client.principal,
        )
        runs_as = Caller(
            persona=caller.persona,
            client=relayed,
            request_id=caller.request_id,
            on_log=exchange.log,
            trace=caller.trace,
        )
        return exchange, runs_as

    async def _run_exchange(
        self,
        exchange: Exchange,
        upstream: Upstream,
        method: str,
        params: dict[str, Any],
        runs_as: Caller,
        timeout: float | None,
    ) -> None:
        result: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            # The gateway's task group runs this, not the request's task: its trace goes with it.
            with self.inflight.calling(upstream.name, runs_as), tracing.attached(runs_as.trace):
                result = await upstream.request(
                    method, params, timeout=timeout, on_progress=exchange.progress
                )
        except Exception as exc:
            error = exc
        finally:
            exchange.finish(result, error)

    async def _next_of(
        self,
        exchange: Exchange,
        binding: Binding,
        *,
        on_log: LogSink | None = None,
        on_progress: ProgressRelay | None = None,
    ) -> dict[str, Any]:
        """The exchange's next answer, its state sealed; meanwhile the upstream's log lines go to
        `on_log` and its progress to `on_progress` (those of the client request waiting now)."""
        exchange.listening, exchange.progress_to = on_log, on_progress
        try:
            await exchange.deliver_held_progress()
            result = await exchange.next()
        finally:
            exchange.listening, exchange.progress_to = None, None
        if result.get("resultType") != "input_required":
            self._exchanges.pop(exchange.id, None)
            return result
        round = Round(asked=frozenset(result["inputRequests"]), exchange=exchange.id)
        return {**result, "requestState": self.seal.seal(binding, round, ttl=exchange.timeout)}

    # --- handshake-era upstream: requests sent to mcpgw's upstream session -----------------------

    async def on_sampling(
        self, server: str, params: dict[str, Any]
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools:
        """An upstream's `sampling/createMessage`, answered by the sampler, shaped for the upstream.

        The answer may come from a client of either era or from a model; a request that offered
        tools, or an answer of several content blocks, takes the shape sampling with tools has.
        """
        answer = await self.sampler.on_sampling(server, params)
        if params.get("tools") or isinstance(answer.get("content"), list):
            return types.CreateMessageResultWithTools.model_validate(answer)
        return types.CreateMessageResult.model_validate(answer)

    async def on_elicitation(self, server: str, params: dict[str, Any]) -> types.ElicitResult:
        """An upstream's `elicitation/create`, relayed by the sampler to the client of the call."""
        return types.ElicitResult.model_validate(await self.sampler.on_elicitation(server, params))
