"""The litellm boundary: answering a sampling request with a model, through litellm's Router.

Owns loading litellm (on the first request that needs a model, never on the
gateway's start-up path; in a worker thread, off the event loop; with
`LITELLM_LOCAL_MODEL_COST_MAP=True` so it never downloads its price map), the
one Router over every `[sampling.routes]` entry (retries, timeouts, fallbacks,
cooldowns), reporting the routes the Router is cooling down, and what a call
cost and which route answered, read from litellm's response into the request's
`Record`. Nothing else in mcpgw touches litellm: a model call that fails on
every route becomes `SamplingFailed` here, with litellm's error as its cause.

litellm costs seconds and ~160 MiB to import, hence all of the above.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from mcpgw.config import SamplingRoute, SamplingSettings
from mcpgw.errors import SamplingFailed
from mcpgw.observe import tracing
from mcpgw.sampling.convert import from_chat_response, to_chat_request

if TYPE_CHECKING:
    from mcpgw.sampling import Record

logger = logging.getLogger("mcpgw.sampling")


class Models:
    """litellm's Router over the configured routes, built on first use; one per gateway."""

    def __init__(self, settings: SamplingSettings) -> None:
        self.settings = settings
        self._router: Any = None
        self._router_lock = anyio.Lock()

    async def complete(
        self, chain: list[str], params: Mapping[str, Any], record: Record, *, context: str | None = None
    ) -> dict[str, Any]:
        """The MCP answer to `params` from the first route of `chain` that answers (`SamplingFailed` if none).

        `context` is what `includeContext` adds to the system prompt. Routes whose key variable is
        unset are skipped, and named in the error if every other route fails too.
        """
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
        request = to_chat_request(params, context=context)
        router = await self._ready_router(record)
        cooling = _cooling(router, usable)
        record.cooling = list(cooling)
        for name, why in cooling.items():
            logger.warning("sampling: route '%s' %s", name, why)
        first = self.settings.routes[usable[0]].model
        with tracing.span(
            f"chat {first}", kind="client", attributes=_chat_attributes(first, request)
        ) as span:
            try:
                response = await router.acompletion(model=usable[0], fallbacks=usable[1:], **request)
            except Exception as exc:
                record.tried.extend(usable)
                raise SamplingFailed(_describe_llm_error(exc, usable, missing, cooling)) from exc
            _answered(span, response)
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
        route = self.settings.routes.get(used)
        if (
            route is not None
            and route.input_cost_per_token is not None
            and route.output_cost_per_token is not None
        ):
            # The registry's prices are the operator's word. litellm keeps custom prices in one map for
            # the whole process, keyed by model name, so another Router that names the same model
            # (a reload, a second gateway) can change what `response_cost` says.
            record.cost_usd = (
                record.input_tokens * route.input_cost_per_token
                + record.output_tokens * route.output_cost_per_token
            )
        result = from_chat_response(response, tools=bool(params.get("tools")))
        record.model = str(result.get("model"))
        return result

    def worst_cost(self, chain: list[str], *, input_tokens: int, output_tokens: int) -> float:
        """What these tokens cost on the dearest route of `chain` whose prices are known (0 if none).

        A route's prices come from the registry (`input_cost_per_token`, `output_cost_per_token`),
        else from litellm's price map once litellm is loaded (it is not loaded just for this).
        """
        costs = [0.0]
        for name in chain:
            prices = self._prices(self.settings.routes[name])
            if prices is not None:
                costs.append(input_tokens * prices[0] + output_tokens * prices[1])
        return max(costs)

    def _prices(self, route: SamplingRoute) -> tuple[float, float] | None:
        """USD per input and per output token of `route`, where known."""
        given = (route.input_cost_per_token, route.output_cost_per_token)
        if given[0] is not None and given[1] is not None:
            return given[0], given[1]
        known: tuple[float | None, float | None] = (None, None)
        if self._router is not None:  # litellm is imported: its price map is at hand
            import litellm

            try:
                info = litellm.get_model_info(route.model)
                known = (info.get("input_cost_per_token"), info.get("output_cost_per_token"))
            except Exception:  # a model litellm's price map does not know: no price
                logger.debug("sampling: no price for %s in litellm's price map", route.model)
        incoming = given[0] if given[0] is not None else known[0]
        outgoing = given[1] if given[1] is not None else known[1]
        if incoming is None and outgoing is None:
            return None
        return float(incoming or 0.0), float(outgoing or 0.0)

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


def _chat_attributes(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The model call as the GenAI conventions name it (never the prompt or the answer)."""
    provider, _, _ = model.partition("/")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider if "/" in model else "openai",
        "gen_ai.request.model": model,
    }
    for key, name in (("max_tokens", "max_tokens"), ("temperature", "temperature")):
        if isinstance(request.get(key), int | float):
            attributes[f"gen_ai.request.{name}"] = request[key]
    return attributes


def _answered(span: Any, response: Any) -> None:
    """What the model said about its answer, on the model call's span."""
    if span is None:
        return
    usage = getattr(response, "usage", None)
    choices = getattr(response, "choices", None) or []
    reasons = [str(getattr(c, "finish_reason", "")) for c in choices if getattr(c, "finish_reason", None)]
    tracing.annotate(
        span,
        {
            "gen_ai.response.model": getattr(response, "model", None),
            "gen_ai.response.id": getattr(response, "id", None),
            "gen_ai.response.finish_reasons": reasons or None,
            "gen_ai.usage.input_tokens": getattr(usage, "prompt_tokens", None),
            "gen_ai.usage.output_tokens": getattr(usage, "completion_tokens", None),
        },
    )


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
