"""The one forward pipeline: every request kind goes through the same named stages, in this order.

    resolve   the persona's view decides whether the name exists for this caller; the
              catalog turns it into an upstream and the upstream's own name    (`Kind.resolve`)
    guard     the data rules on what goes up: a call's or prompt's arguments,
              a completion's argument values; and on what the upstream says while
              the call runs (progress messages, log lines)   (`_guard_up`, `_guard_notifications`)
    flows     the session's flow policies on a tool call, given what the session did
              before (refused as a tool error, or asked of the user)          (`_flow_check`)
    forward   counted against draining (`Kind.counted`), under the call's timeout, with progress
              and log relay, through the era bridge                              (`Kind.forward`);
              or the gateway's own tool: a workflow's steps (`Target.local`)
    shape     names and URIs in the result put back into the gateway's namespace (`Kind.shape`)
    guard     the data rules on what comes back: every result and error reply of every kind
                                                                 (`_guard_down`, `_guarded_error`)
    flows     what the result adds to the session: the labels it carried in, fingerprints
              of a private tool's values, after the data rules redacted them  (`FlowCall.done`)

The audit step that records the request wraps the pipeline at the server boundary
(`server.handlers._recorded`), where the caller's client and protocol are known; the
stages add to that step (`audit.note`). A rule that must hold for every request kind
lives in one stage here, never in a kind: that is how a data rule came to apply to
tool results but not to completions before this module existed.

With tracing on (`observe.tracing`), the guard stages that have data rules and the forward
stage are spans under the request's (`upstream_span` names the upstream call as the MCP
conventions do).

Owns: the stage order and the two guard stages. Each kind (`core.kinds`) says only
how it resolves, forwards and shapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import anyio
import mcp_types as types

from mcpgw import audit
from mcpgw.bridge.state import Binding, Round
from mcpgw.errors import DataBlocked
from mcpgw.observe import context as observe
from mcpgw.observe import tracing
from mcpgw.security.flows import FlowCall, Refusal, SessionRef, labels_of
from mcpgw.upstream import Upstream
from mcpgw.upstream.inflight import ClientChannel
from mcpgw.upstream.logrelay import LogSink
from mcpgw.upstream.session import ProgressRelay, UpstreamReplyError

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway

logger = logging.getLogger("mcpgw.pipeline")

_NAMED = frozenset({"tools/call", "prompts/get"})
"""Upstream methods whose target is named by the catalog (a tool, a prompt): its name is a metric label."""


@dataclass(slots=True)
class Request:
    """One client request as the pipeline sees it, whatever its kind. Not changed once made (a stage
    that must, `replace`s it); not frozen, as a frozen dataclass costs a microsecond more per call."""

    params: Mapping[str, Any]
    persona: str | None
    """As the client chose it (None: the default); resolved by the gateway."""
    client: ClientChannel | None = None
    """What the client behind the request can answer (sampling, elicitation), for the bridge."""
    on_progress: ProgressRelay | None = None
    on_log: LogSink | None = None
    session: SessionRef | None = None
    """The agent session the request belongs to (the flow policies' state); None: not tracked."""


@dataclass
class Target:
    """What `resolve` decided: where the request goes, and how the data rules name it."""

    persona: str | None
    """The resolved persona (the data rules and the bridge's caller)."""
    rule_name: str
    """The name the data rules' `tools` globs match: the exposed tool or prompt name, or the URI."""
    upstream: Upstream | None = None
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    """The upstream request's params, built from the client's (names translated, extras kept)."""
    upward: tuple[str, ...] = ()
    """Keys of `params` holding what the client sends upstream, for the `arguments` guard."""
    timeout: float | None = None
    """This request's own timeout (a per-tool timeout); None: the upstream's."""
    answer: dict[str, Any] | None = None
    """Set when the gateway itself answers (e.g. a search-mode `search_tools`): nothing is forwarded."""
    local: Callable[[Gateway, Request, Target], Awaitable[dict[str, Any]]] | None = None
    """Set when the gateway serves the request itself after the guard stages (a workflow tool,
    `core.workflows`): called in place of `Kind.forward`."""


class Kind(Protocol):
    """One request kind's part in the pipeline: how it resolves, forwards and shapes."""

    counted: bool
    """Whether the pipeline counts its forward against draining (`Gateway.enter`); False: it counts
    itself, or reaches no upstream. Counted here, not in `forward`: no coroutine frame of its own."""

    async def resolve(self, gateway: Gateway, request: Request) -> Target: ...

    def forward(self, gateway: Gateway, request: Request, target: Target) -> Awaitable[dict[str, Any]]: ...

    def shape(self, gateway: Gateway, target: Target, result: dict[str, Any]) -> dict[str, Any]: ...


_OPERATIONS = {
    "tools/call": ("execute_tool", "gen_ai.tool.name"),
    "prompts/get": (None, "gen_ai.prompt.name"),
}


def upstream_span(target: Target) -> AbstractContextManager[Any]:
    """The upstream call's span (kind CLIENT, named as the MCP conventions say), when tracing is on.

    It names the upstream's own tool or prompt (the gateway's name is on the request's span);
    the mcp SDK's `MCP send` span under it is the one whose context the upstream receives.
    """
    upstream = target.upstream
    if upstream is None or not tracing.on():
        return tracing.NO_SPAN
    params = target.params
    operation, name_key = _OPERATIONS.get(target.method, (None, None))
    name = params.get("name") if name_key is not None else None
    url = getattr(upstream.config, "url", None)
    attributes: dict[str, Any] = {
        "mcp.method.name": target.method,
        "mcp.protocol.version": upstream.protocol_version,
        "mcpgw.server": upstream.name,
        "network.transport": "tcp" if url is not None else "pipe",
    }
    if operation is not None:
        attributes["gen_ai.operation.name"] = operation
    if name_key is not None and isinstance(name, str):
        attributes[name_key] = name
    uri = params.get("uri")
    if isinstance(uri, str):
        attributes["mcp.resource.uri"] = uri
    if url is not None:
        parsed = urlsplit(url)
        attributes["server.address"] = parsed.hostname
        attributes["server.port"] = parsed.port or (443 if parsed.scheme == "https" else 80)
    label = f"{target.method} {name}" if isinstance(name, str) else target.method
    return tracing.span(
        label, kind="client", attributes={k: v for k, v in attributes.items() if v is not None}
    )


class Pipeline:
    """Runs a request of any kind through the stages, in order (see the module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def run(self, kind: Kind, request: Request) -> dict[str, Any]:
        gateway = self._gateway
        target = await kind.resolve(gateway, request)
        upstream = target.upstream
        # A URI is no label (unbounded): only tool and prompt names, which the view vouched for
        # (the gateway's own tools, such as a search persona's, included).
        named = target.method in _NAMED or target.answer is not None
        observe.routed(
            server=upstream.name if upstream is not None else None,
            tool=target.rule_name if named else None,
        )
        if target.answer is not None:
            return target.answer
        # Each stage's own check, made here first: a stage with nothing to do costs no call.
        if gateway.guard is not None:
            with self._rules_span("arguments", target):
                self._guard_up(target)
        # What goes upstream, not what the client sent: a persona's fixed arguments included, the
        # search-mode wrapper and data-rule redactions removed (`audit.note`, without its keywords).
        if "arguments" in target.upward and (step := audit.current()) is not None:
            step.arguments = target.params.get("arguments")
        flow = self._flow(request, target) if gateway.flows is not None else None
        if flow is not None:
            refused = await self._flow_check(flow, request, target)
            if refused is not None:
                return refused
        if gateway.guard is not None:
            request = self._guard_notifications(request, target)
        began = time.perf_counter()
        with upstream_span(target) as span:
            try:
                if target.local is not None:
                    result = await target.local(gateway, request, target)
                elif not kind.counted:
                    result = await kind.forward(gateway, request, target)
                else:
                    gateway.enter()  # refused once draining; else counted until it is answered
                    try:
                        result = await kind.forward(gateway, request, target)
                    finally:
                        gateway.leave()
            except UpstreamReplyError as exc:
                tracing.annotate(span, {"rpc.response.status_code": str(exc.error.code)})
                raise self._guarded_error(target, exc) from exc
            finally:
                observe.forwarded(time.perf_counter() - began)
            if result.get("isError") is True:
                tracing.failed(span, "tool_error")
        result = kind.shape(gateway, target, result)
        if gateway.guard is not None:
            with self._rules_span("results", target):
                result = self._guard_down(target, result)
        if flow is not None:
            flow.done(result)
        return result

    def _rules_span(self, stage: str, target: Target) -> AbstractContextManager[Any]:
        """A span for a guard stage that has data rules to apply (none: no span)."""
        if self._gateway.guard is None or not tracing.on():
            return tracing.NO_SPAN
        attributes = {"mcpgw.data_rules.stage": stage, "mcpgw.data_rules.target": target.rule_name}
        return tracing.span(f"data rules {stage}", attributes=attributes)

    def _flow(self, request: Request, target: Target) -> FlowCall | None:
        """This call's passage through the flow policies; None when none applies (no work at all)."""
        gateway, upstream = self._gateway, target.upstream
        flows = gateway.flows
        if flows is None or request.session is None or upstream is None:
            return None
        policy = flows.policy(gateway.registry, target.persona)
        if policy is None:
            return None
        if target.method == "tools/call":
            route = gateway.catalog.tool_routes.get(target.rule_name)
            labels = labels_of(upstream.config, target.params["name"], route.definition if route else None)
        elif target.method == "resources/read":
            # A read sends nothing out: only what it brings in counts (its server's labels).
            labels = frozenset(upstream.config.labels or ()) & {"private", "untrusted"}
        else:
            return None
        step = audit.current()
        flow = flows.begin(
            gateway.registry,
            policy,
            request.session,
            name=target.rule_name,
            labels=labels,
            request_id=step.request_id if step is not None else None,
        )
        if step is not None and step.session is None:
            step.session = flow.session.id
        return flow

    async def _flow_check(self, flow: FlowCall, request: Request, target: Target) -> dict[str, Any] | None:
        """None when the call may go on; else the tool error the client gets (and the audit row says
        why), or, to a 2026-07-28 client, the question whose answer its retry brings back."""
        answered, answer = self._confirmation(request, target)
        refusal = flow.check(target.params.get("arguments"))
        if refusal is None:
            return None
        if refusal.confirmable and not answered and _can_ask_modern(request):
            return self._ask_modern(request, refusal, target)
        if refusal.confirmable and (
            _accepted(answer) if answered else await self._confirmed(request, refusal, target.rule_name)
        ):
            flow.passed()
            audit.note(findings=f"flow:{refusal.policy}:confirmed")
            return None
        text = flow.refused(refusal)
        if refusal.confirmable:
            text += "; the user did not confirm it" + (
                ""
                if answered or _can_ask(request)
                else " (this client cannot be asked: it does not take elicitation requests)"
            )
        logger.warning("%s", text)
        audit.note(outcome=audit.Outcome.BLOCKED, findings=f"flow:{refusal.policy}", result=refusal.record())
        return {"content": [{"type": "text", "text": text}], "isError": True}

    async def _confirmed(self, request: Request, refusal: Refusal, name: str) -> bool:
        """Ask a handshake-era user (an elicitation on the call's own channel) whether the call may go on."""
        client = request.client
        if not _can_ask(request) or client is None or client.send is None:
            return False
        with anyio.move_on_after(self._gateway.registry.gateway.timeout):
            try:
                answer = await client.send("elicitation/create", _question(refusal, name))
            except Exception as exc:  # whatever the client answered, it was not a yes
                logger.warning("the confirmation of %s failed: %s", name, exc)
                return False
            return _accepted(answer)
        return False

    def _binding(self, request: Request, target: Target) -> Binding:
        assert target.upstream is not None
        principal = request.client.principal if request.client is not None else None
        return Binding.of(
            target.upstream.name, target.method, target.params, persona=target.persona, principal=principal
        )

    def _ask_modern(self, request: Request, refusal: Refusal, target: Target) -> dict[str, Any]:
        """The question as a 2026-07-28 client gets it: `input_required`, with a state sealed to this
        caller and call that says which policy mcpgw asked about (the upstream never sees either)."""
        round = Round(asked=frozenset({CONFIRM_KEY}), confirm=refusal.policy)
        state = self._gateway.bridge.seal.seal(self._binding(request, target), round)
        return {
            "resultType": "input_required",
            "inputRequests": {
                CONFIRM_KEY: {"method": "elicitation/create", "params": _question(refusal, target.rule_name)}
            },
            "requestState": CONFIRM_STATE + state,
        }

    def _confirmation(self, request: Request, target: Target) -> tuple[bool, Any]:
        """Whether this is a 2026-07-28 client's retry answering mcpgw's confirmation, and its answer.

        The state and the answer are taken out of the call either way: they are mcpgw's, not the
        upstream's. A state that was altered, reused or issued for another call is refused.
        """
        state = target.params.get("requestState")
        if not (isinstance(state, str) and state.startswith(CONFIRM_STATE)):
            return False, None
        del target.params["requestState"]
        responses = target.params.pop("inputResponses", None)
        round = self._gateway.bridge.seal.open(state[len(CONFIRM_STATE) :], self._binding(request, target))
        answer = responses.get(CONFIRM_KEY) if isinstance(responses, dict) else None
        return round.confirm is not None, answer

    def _guard_up(self, target: Target) -> None:
        guard = self._gateway.guard
        if guard is None:
            return
        for key in target.upward:
            value = target.params.get(key)
            if value is not None:
                target.params[key] = guard.check("arguments", target.persona, target.rule_name, value)

    def _guard_notifications(self, request: Request, target: Target) -> Request:
        """What the upstream says while the call runs (progress messages, log lines) is a result too.

        Redacted like one; under `block` the notification is dropped (a notification cannot be
        refused), and the finding goes to the call's audit step as for any block.
        """
        guard = self._gateway.guard
        if guard is None or guard.plan("results", target.persona, target.rule_name) is None:
            return request
        on_progress, on_log = request.on_progress, request.on_log

        def checked(value: Any) -> Any:
            return guard.check("results", target.persona, target.rule_name, value)

        async def progress(done: float, total: float | None, message: str | None) -> None:
            assert on_progress is not None
            try:
                await on_progress(done, total, checked(message) if message is not None else None)
            except DataBlocked:
                logger.warning("a progress message of %s was dropped by a data rule", target.rule_name)

        async def log(level: str, data: Any, name: str | None) -> None:
            assert on_log is not None
            try:
                await on_log(level, checked(data), checked(name) if name is not None else None)
            except DataBlocked:
                logger.warning("a log line from %s was dropped by a data rule", target.rule_name)

        return replace(
            request,
            on_progress=progress if on_progress is not None else None,
            on_log=log if on_log is not None else None,
        )

    def _guarded_error(self, target: Target, error: UpstreamReplyError) -> UpstreamReplyError:
        """An upstream's error reply is a result like any other: its message and data pass the rules."""
        guard = self._gateway.guard
        if guard is None:
            return error
        reply = {"message": error.error.message, "data": error.error.data}
        checked = guard.check("results", target.persona, target.rule_name, reply)
        if checked is reply:
            return error
        data = checked.get("data")
        redacted = types.ErrorData(code=error.error.code, message=str(checked["message"]), data=data)
        return UpstreamReplyError(error.server, redacted)

    def _guard_down(self, target: Target, result: dict[str, Any]) -> dict[str, Any]:
        guard = self._gateway.guard
        if guard is None:
            return result
        checked: dict[str, Any] = guard.check("results", target.persona, target.rule_name, result)
        return checked


CONFIRM_KEY = "mcpgw-confirm"
"""The key of mcpgw's own confirmation among a 2026-07-28 client's input requests."""
CONFIRM_STATE = "mcpgw-flow:"
"""Marks a `requestState` that carries a flow confirmation, which the flows stage takes (not the bridge)."""


def _question(refusal: Refusal, name: str) -> dict[str, Any]:
    return {
        "message": f"Flow policy {refusal.policy}: {refusal.message}. Let {name} run anyway?",
        "requestedSchema": {
            "type": "object",
            "properties": {"confirm": {"type": "boolean", "title": f"Run {name}"}},
            "required": ["confirm"],
        },
    }


def _accepted(answer: Any) -> bool:
    if not isinstance(answer, Mapping):
        return False
    content = answer.get("content")
    return (
        answer.get("action") == "accept" and isinstance(content, Mapping) and content.get("confirm") is True
    )


def _can_ask_modern(request: Request) -> bool:
    client = request.client
    return client is not None and client.modern and client.can_elicit


def _can_ask(request: Request) -> bool:
    """A handshake-era client that takes elicitation requests (a 2026-07-28 one is asked through
    `input_required` and its retry: `_ask_modern`)."""
    client = request.client
    return client is not None and client.can_elicit and client.send is not None
