"""The request kinds of the forward pipeline: tools/call, resources/read, prompts/get,
completion/complete and resources/(un)subscribe.

Owns: for each kind, how a client's request is resolved through the persona's
view to an upstream (names translated, a persona's fixed and narrowed arguments,
search mode, per-tool timeouts), how it is forwarded (the era bridge for the
kinds an upstream may answer with questions; the resource watch for
subscriptions), and how its result is shaped back into the gateway's namespace.
What every kind shares (the data rules, the stage order) is `core.pipeline`'s.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from mcp_types import LOG_LEVEL_META_KEY

from mcpgw import audit
from mcpgw import catalog as catalog_mod
from mcpgw.catalog import personas as personas_mod
from mcpgw.catalog.personas import ToolEntry, View
from mcpgw.config import SEPARATOR
from mcpgw.core import workflows
from mcpgw.core.peruser import per_user
from mcpgw.core.pipeline import Request, Target
from mcpgw.core.watch import Subscriber
from mcpgw.errors import InvalidRequest, NotFound, ResourceNotFound
from mcpgw.upstream import Upstream
from mcpgw.upstream.inflight import Caller
from mcpgw.upstream.session import forwardable_meta

if TYPE_CHECKING:
    from mcpgw.core.gateway import Gateway


class _Bridged:
    """Forward through the era bridge: the upstream may ask for sampling, elicitation or roots."""

    counted = True

    def forward(self, gateway: Gateway, request: Request, target: Target) -> Awaitable[dict[str, Any]]:
        """The bridge's own coroutine: no frame of this method, and no closure, on a shared server's way."""
        upstream = target.upstream
        assert upstream is not None
        if per_user(upstream.config):  # its calls go in the caller's own session (`core.peruser`)
            return gateway.per_user.forward(
                upstream, request.client, partial(_sent, gateway, request, target)
            )
        return _sent(gateway, request, target, upstream)


def _sent(
    gateway: Gateway, request: Request, target: Target, upstream: Upstream
) -> Awaitable[dict[str, Any]]:
    """`request` sent to `upstream` through the era bridge (`bridge.Bridge.request`)."""
    return gateway.bridge.request(
        upstream,
        target.method,
        target.params,
        persona=request.persona,
        client=request.client,
        on_progress=request.on_progress,
        on_log=request.on_log,
        timeout=target.timeout,
    )


class CallTool(_Bridged):
    async def resolve(self, gateway: Gateway, request: Request) -> Target:
        params = request.params
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("tools/call needs a tool name")
        arguments = _arguments(name, params.get("arguments"))
        view = gateway.view(request.persona)
        if view.search and name == personas_mod.SEARCH_TOOL:
            answer = await _search(gateway, request.persona, arguments or {})
            return Target(persona=view.persona, rule_name=name, answer=answer)
        if view.search:
            if name != personas_mod.CALL_TOOL:
                raise NotFound(f"Unknown tool: {name}")
            inner = (arguments or {}).get("name")
            if not isinstance(inner, str):
                raise InvalidRequest(f"{personas_mod.CALL_TOOL} needs the name of a tool found by search")
            name, arguments = inner, _arguments(inner, (arguments or {}).get("arguments"))
            # The row names the tool called, not the search-mode wrapper: `logs --tool X` finds it.
            audit.note(name=name)
        # `gateway.lookup`'s first look, in the view in hand; a name it lacks, or a catalog remembered
        # from the last run (judged again once upstreams start), takes the whole look-up.
        entry = view.entries.get(name) if not gateway.catalog.remembered else None
        if entry is None:
            view, entry = await _tool_lookup(gateway, request.persona, name)
        if entry.workflow is not None:
            return workflows.target(view, entry, arguments)
        route = gateway.catalog.tool(entry.target)
        upstream = route.upstream
        if (step := audit.current()) is not None:  # `audit.note`, without building its keywords
            step.server = upstream.name
        upstream_params = _with_extras({"name": route.name}, params)
        sent = view.arguments(entry, arguments)
        if sent is not None:
            upstream_params["arguments"] = sent
        if upstream.era == "stateless" and _wants_logs(request):
            # A 2026-07-28 upstream logs only for a request that opts in; mcpgw filters per client.
            upstream_params.setdefault("_meta", {})[LOG_LEVEL_META_KEY] = "debug"
        return Target(
            persona=view.persona,
            rule_name=entry.target,
            upstream=upstream,
            method="tools/call",
            params=upstream_params,
            upward=("arguments",),
            timeout=upstream.config.tool_timeouts.get(route.name),
        )

    def shape(self, gateway: Gateway, target: Target, result: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace(gateway, target)
        if namespace and isinstance(result.get("content"), list):
            result["content"] = catalog_mod.rewrite_content_uris(result["content"], namespace)
        if namespace and "_meta" in result:
            result["_meta"] = catalog_mod.expose_meta(result["_meta"], namespace)
        return result


async def _tool_lookup(gateway: Gateway, persona: str | None, name: str) -> tuple[View, ToolEntry]:
    try:
        return await gateway.lookup(
            persona, lambda v: v.tool(name), withheld=lambda c: name in c.withheld_tools
        )
    except NotFound:
        unstarted = _never_started_owner(gateway, persona, name)
        if unstarted is None:
            raise
        audit.note(server=unstarted.name)
        raise unstarted.unavailable() from None


def _wants_logs(request: Request) -> bool:
    """Whether the client behind `request` can get a call's log lines: a handshake-era one unless its
    `logging/setLevel` filters them (mcpgw filters), a 2026-07-28 one only when this request opts in
    (its `_meta` log level). Asking an upstream for lines nobody gets would make it answer each call
    as an SSE stream instead of one JSON body, for lines then dropped."""
    if request.on_log is None:
        return False
    client = request.client
    if client is None or not client.modern:
        return True
    meta = request.params.get("_meta")
    return isinstance(meta, Mapping) and meta.get(LOG_LEVEL_META_KEY) is not None


def _never_started_owner(gateway: Gateway, persona: str | None, name: str) -> Upstream | None:
    """The server whose namespace prefixes `name` when it has never served (so its tool names were
    never known), and only if the persona's rules let it list that server's tools: a persona learns
    nothing of a server it cannot see, and gets "Unknown tool" as for any name that does not exist."""
    namespace, separator, rest = name.partition(SEPARATOR)
    if not separator or not rest:
        return None
    upstream = gateway.catalog.namespaces.get(namespace)
    if upstream is None or upstream.served:
        return None
    return upstream if gateway.view(persona).may_list(upstream.name, name) else None


class ReadResource(_Bridged):
    async def resolve(self, gateway: Gateway, request: Request) -> Target:
        uri = request.params.get("uri")
        if not isinstance(uri, str):
            raise InvalidRequest("resources/read needs a uri")
        view, route = await _resource_route(gateway, request.persona, uri)
        return Target(
            persona=view.persona,
            rule_name=uri,
            upstream=route.upstream,
            method="resources/read",
            params=_with_extras({"uri": route.name}, request.params),
        )

    def shape(self, gateway: Gateway, target: Target, result: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace(gateway, target)
        if namespace:
            result["contents"] = [
                catalog_mod.expose_item(item, namespace, uri=catalog_mod.expose_uri(namespace, item["uri"]))
                if isinstance(item, dict) and isinstance(item.get("uri"), str)
                else item
                for item in result.get("contents") or []
            ]
        return result


class GetPrompt(_Bridged):
    async def resolve(self, gateway: Gateway, request: Request) -> Target:
        params = request.params
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("prompts/get needs a prompt name")
        view, _ = await gateway.lookup(
            request.persona, lambda v: v.check_prompt(name), withheld=lambda c: name in c.withheld_prompts
        )
        route = await gateway.route(lambda c: c.prompt(name))
        audit.note(server=route.upstream.name)
        upstream_params = _with_extras({"name": route.name}, params)
        if params.get("arguments") is not None:
            upstream_params["arguments"] = params["arguments"]
        return Target(
            persona=view.persona,
            rule_name=name,
            upstream=route.upstream,
            method="prompts/get",
            params=upstream_params,
            upward=("arguments",),
        )

    def shape(self, gateway: Gateway, target: Target, result: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace(gateway, target)
        if namespace:
            for message in result.get("messages") or []:
                if isinstance(message, dict) and isinstance(message.get("content"), dict):
                    message["content"] = catalog_mod.rewrite_content_uris([message["content"]], namespace)[0]
        return result


class Complete:
    """Completions: asked of the upstream only when it declares them (else: no values)."""

    counted = False  # only what it asks of the upstream counts (see `forward`)

    async def resolve(self, gateway: Gateway, request: Request) -> Target:
        params = request.params
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise InvalidRequest("completion/complete needs a ref")
        if ref.get("type") == "ref/prompt":
            name = str(ref.get("name"))
            view, _ = await gateway.lookup(
                request.persona, lambda v: v.check_prompt(name), withheld=lambda c: name in c.withheld_prompts
            )
            route = await gateway.route(lambda c: c.prompt(name))
            upstream_ref, rule_name = {**ref, "name": route.name}, name
        elif ref.get("type") == "ref/resource":
            uri = str(ref.get("uri"))
            view, _ = await gateway.lookup(
                request.persona,
                lambda v: _check_completion_uri(v, uri),
                withheld=lambda c: uri in c.withheld_templates or c.withholds_uri(uri),
            )
            route = await gateway.route(lambda c: c.resource(uri))
            upstream_ref, rule_name = {**ref, "uri": route.name}, uri
        else:
            raise NotFound(f"Unknown completion reference type: {ref.get('type')}")
        upstream_params = _with_extras({"ref": upstream_ref}, params)
        for key in ("argument", "context"):
            if key in params:
                upstream_params[key] = params[key]
        return Target(
            persona=view.persona,
            rule_name=rule_name,
            upstream=route.upstream,
            method="completion/complete",
            params=upstream_params,
            upward=("argument", "context"),
        )

    async def forward(self, gateway: Gateway, request: Request, target: Target) -> dict[str, Any]:
        upstream = target.upstream
        assert upstream is not None
        if "completions" not in upstream.capabilities or per_user(upstream.config):
            # A per-user server completes nothing: a completion names no caller to send it as.
            return {"completion": {"values": [], "hasMore": False}}
        gateway.enter()
        try:
            with gateway.inflight.calling(upstream.name, Caller(persona=target.persona)):
                return await upstream.request(target.method, target.params)
        finally:
            gateway.leave()

    def shape(self, gateway: Gateway, target: Target, result: dict[str, Any]) -> dict[str, Any]:
        return result


class Subscribe:
    """`resources/subscribe` (`on`) and `unsubscribe`: forwarded to the resource watch, not as a request."""

    counted = False

    def __init__(self, connection: Subscriber, *, on: bool) -> None:
        self._connection = connection
        self._on = on

    async def resolve(self, gateway: Gateway, request: Request) -> Target:
        uri = request.params.get("uri")
        if not isinstance(uri, str):
            raise InvalidRequest(f"resources/{'subscribe' if self._on else 'unsubscribe'} needs a uri")
        view, route = await _resource_route(gateway, request.persona, uri)
        return Target(
            persona=view.persona, rule_name=uri, upstream=route.upstream, params={"uri": route.name}
        )

    async def forward(self, gateway: Gateway, request: Request, target: Target) -> dict[str, Any]:
        assert target.upstream is not None
        exposed, name = str(request.params["uri"]), target.params["uri"]
        if self._on:
            await gateway.watch.subscribe(target.upstream, name, exposed, self._connection)
        else:
            await gateway.watch.unsubscribe(target.upstream, name, self._connection)
        return {}

    def shape(self, gateway: Gateway, target: Target, result: dict[str, Any]) -> dict[str, Any]:
        return result


CALL_TOOL = CallTool()
READ_RESOURCE = ReadResource()
GET_PROMPT = GetPrompt()
COMPLETE = Complete()


async def _resource_route(gateway: Gateway, persona: str | None, uri: str) -> tuple[View, catalog_mod.Route]:
    # The view's check routes the URI too (matching it against the templates once, not twice).
    view, route = await gateway.lookup(
        persona, lambda v: v.check_resource(uri, gateway.catalog), withheld=lambda c: c.withholds_uri(uri)
    )
    audit.note(server=route.upstream.name)
    return view, route


def _namespace(gateway: Gateway, target: Target) -> str | None:
    if target.upstream is None:  # the gateway's own tool (a workflow): its steps' results were shaped
        return None
    return gateway.catalog.namespace_of(target.upstream)


def _arguments(name: str, arguments: Any) -> dict[str, Any] | None:
    if arguments is not None and not isinstance(arguments, dict):
        raise InvalidRequest(f"arguments of {name} must be an object")
    return arguments


async def _search(gateway: Gateway, persona: str | None, arguments: Mapping[str, Any]) -> dict[str, Any]:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest(f"{personas_mod.SEARCH_TOOL} needs a query")
    limit = arguments.get("limit", personas_mod.SEARCH_LIMIT)
    await gateway.wait_started()
    found = gateway.view(persona).search_tools(
        query, limit if isinstance(limit, int) else personas_mod.SEARCH_LIMIT
    )
    tools = [{k: tool[k] for k in ("name", "description", "inputSchema") if k in tool} for tool in found]
    text = json.dumps({"tools": tools}, ensure_ascii=False)
    return {"content": [{"type": "text", "text": text}], "structuredContent": {"tools": tools}}


def _check_completion_uri(view: View, uri: str) -> None:
    listed = {r["uri"] for r in view.resources} | {str(t.get("uriTemplate")) for t in view.resource_templates}
    if uri not in listed:
        raise ResourceNotFound(uri)


def _with_extras(base: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Carry the client's own `_meta` keys and 2026 multi-round-trip fields upstream."""
    meta = forwardable_meta(params.get("_meta"))
    if meta:
        base["_meta"] = meta
    for key in ("inputResponses", "requestState"):
        if key in params:
            base[key] = params[key]
    return base
