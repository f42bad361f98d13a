"""The merged, namespaced catalog of every upstream that has served.

Owns: exposed names (`<namespace>__<name>`, or an alias), the rule that every
exposed tool name matches `^[A-Za-z0-9_-]{1,64}$`, collision and length
problems (each with its fix), reversible rewriting of resource URIs
(`mcpgw://<namespace>/<upstream uri>`; an MCP Apps `ui://<rest>` stays `ui://`
as `ui://<namespace>/<rest>`) and of the URIs that name them in `_meta`
(`_meta.ui.resourceUri`, `ui/resourceUri`, `openai/outputTemplate`), and
routing an exposed name or URI back to its upstream. A `Catalog` is immutable:
the gateway builds a new one when an upstream's lists change, so readers never
see a half-built catalog.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from mcp.shared.path_security import contains_path_traversal
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from mcpgw.config import SEPARATOR, TOOL_NAME_RE
from mcpgw.errors import NotFound, ResourceNotFound
from mcpgw.upstream import Upstream
from mcpgw.upstream.lists import ListKind

URI_SCHEME = "mcpgw"
_URI_PREFIX = f"{URI_SCHEME}://"
UI_PREFIX = "ui://"
"""MCP Apps (`io.modelcontextprotocol/ui`): hosts render only `ui://` resources, so these keep the scheme."""
_UI_META_KEYS = ("ui/resourceUri", "openai/outputTemplate")
"""`_meta` keys outside `_meta.ui` that name a UI resource: the older MCP Apps key, and ChatGPT's."""
_TEMPLATE_VAR = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class Problem:
    """Something in an upstream's lists that the catalog could not expose as is."""

    server: str
    kind: str
    name: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.server}: {self.kind} {self.name!r}: {self.message} (fix: {self.fix})"


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    name: str
    """The name (or URI) the upstream knows it by."""
    definition: dict[str, Any] | None = field(default=None, compare=False)
    """The item as the upstream serves it (before any rewriting): what pins and poisoning checks judge."""


def expose_uri(namespace: str, uri: str) -> str:
    """The gateway's URI for `namespace`'s `uri`: `mcpgw://ns/<uri>`, or `ui://ns/<rest>` for `ui://<rest>`."""
    if not namespace:
        return uri
    if uri.startswith(UI_PREFIX):
        return f"{UI_PREFIX}{namespace}/{uri[len(UI_PREFIX) :]}"
    return f"{_URI_PREFIX}{namespace}/{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    """`mcpgw://ns/<uri>` -> `(ns, <uri>)`, `ui://ns/<rest>` -> `(ns, ui://<rest>)`; None otherwise.

    A `ui://` URI splits whether or not its first segment is a namespace: callers check that.
    """
    for prefix, kept in ((_URI_PREFIX, ""), (UI_PREFIX, UI_PREFIX)):
        if uri.startswith(prefix):
            namespace, sep, original = uri[len(prefix) :].partition("/")
            if not sep or not original:
                return None
            return namespace, kept + original
    return None


def expose_meta(meta: Any, namespace: str) -> Any:
    """`_meta` with the URIs that name UI resources exposed: `ui.resourceUri`, any other `ui://`
    value directly in `ui`, and the older top-level keys (`_UI_META_KEYS`). Everything else (CSP,
    permissions, visibility, the upstream's own keys) is kept as the upstream gave it."""
    if not namespace or not isinstance(meta, dict):
        return meta
    out = dict(meta)
    ui = meta.get("ui")
    if isinstance(ui, dict):
        out["ui"] = {
            key: expose_uri(namespace, value)
            if isinstance(value, str) and (key == "resourceUri" or value.startswith(UI_PREFIX))
            else value
            for key, value in ui.items()
        }
    for key in _UI_META_KEYS:
        if isinstance(meta.get(key), str):
            out[key] = expose_uri(namespace, meta[key])
    return out


def expose_item(item: dict[str, Any], namespace: str, **changes: Any) -> dict[str, Any]:
    """`item` (a listed or returned tool, resource or contents) with `changes` and its `_meta` exposed."""
    exposed = {**item, **changes}
    if "_meta" in item:
        exposed["_meta"] = expose_meta(item["_meta"], namespace)
    return exposed


@lru_cache(maxsize=1024)
def _template(template: str) -> UriTemplate | re.Pattern[str]:
    try:
        return UriTemplate.parse(template)
    except InvalidUriTemplate:
        # A template the SDK's RFC 6570 parser refuses (an upstream's own dialect): each variable
        # matches anything, and the traversal check below still applies to the whole variable part.
        parts = _TEMPLATE_VAR.split(template)
        return re.compile("^" + "(.+?)".join(re.escape(p) for p in parts) + "$")


def template_matches(template: str, uri: str) -> bool:
    """Whether `uri` is one `template` produces, with no variable that climbs out of its place.

    Matching is the mcp SDK's RFC 6570 matcher (values come back percent-decoded), so
    `{+path}` taking `../secret://vault` or `%2e%2e/secret` is caught here: a value that is
    a path escaping its starting point (`mcp.shared.path_security`) does not match.
    """
    compiled = _template(template)
    if isinstance(compiled, UriTemplate):
        found = compiled.match(uri)
        if found is None:
            return False
        values = [v for value in found.values() for v in ([value] if isinstance(value, str) else value)]
    else:
        match = compiled.match(uri)
        if match is None:
            return False
        values = [unquote(v) for v in match.groups()]
    return not any(contains_path_traversal(value) for value in values)


@dataclass
class Catalog:
    tools: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    resource_templates: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tool_routes: dict[str, Route] = field(default_factory=dict)
    prompt_routes: dict[str, Route] = field(default_factory=dict)
    resource_routes: dict[str, Route] = field(default_factory=dict)
    namespaces: dict[str, Upstream] = field(default_factory=dict)
    unprefixed: list[Upstream] = field(default_factory=list)
    template_routes: dict[str, Route] = field(default_factory=dict)
    """Exposed URI template -> its upstream and the template as the upstream gave it."""
    withheld: dict[str, str] = field(default_factory=dict)
    """Exposed names a security policy keeps out of this catalog, with the reason (see `pins`)."""
    withheld_tools: frozenset[str] = frozenset()
    withheld_prompts: frozenset[str] = frozenset()
    withheld_templates: tuple[str, ...] = ()
    """Exposed URI templates kept out: a URI only they produce is refused like an unknown one."""
    remembered: frozenset[str] = frozenset()
    """Upstreams whose names here are remembered from the last run: their first start is under way."""

    # --- routing ---------------------------------------------------------------------------------

    def input_schema(self, name: str) -> dict[str, Any] | None:
        return input_schema(self.tools, name)

    def tool(self, name: str) -> Route:
        route = self.tool_routes.get(name)
        if route is None:
            raise NotFound(f"Unknown tool: {name}")
        return route

    def prompt(self, name: str) -> Route:
        route = self.prompt_routes.get(name)
        if route is None:
            raise NotFound(f"Unknown prompt: {name}")
        return route

    def resource(self, uri: str) -> Route:
        """The upstream and upstream URI for an exposed resource URI: one listed, or one a served
        template produces. Nothing else is routed: a URI under a server's prefix that neither lists
        nor templates is not forwarded to it (an upstream must not be probed with arbitrary URIs)."""
        route = self.resource_routes.get(uri)
        if route is not None:
            return route
        for template in self.resource_templates:
            exposed = str(template.get("uriTemplate", ""))
            if template_matches(exposed, uri):
                upstream = self.template_routes[exposed].upstream
                split = split_uri(uri)
                namespaced = split is not None and self.namespaces.get(split[0]) is upstream
                return Route(upstream, split[1] if namespaced and split is not None else uri)
        raise ResourceNotFound(uri)

    def withholds_uri(self, uri: str) -> bool:
        """True for a URI that only withheld templates produce: not listed, and no served template matches.

        A persona can never call what it cannot list: without this, a client that knows a withheld
        template could still read (or subscribe to) the URIs under it.
        """
        if uri in self.resource_routes or not any(
            template_matches(template, uri) for template in self.withheld_templates
        ):
            return False
        return not any(template_matches(str(t.get("uriTemplate", "")), uri) for t in self.resource_templates)

    def namespace_of(self, upstream: Upstream) -> str:
        for namespace, candidate in self.namespaces.items():
            if candidate is upstream:
                return namespace
        return ""


def input_schema(tools: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The input schema of the tool named `name` in a listing, if it is there and is an object."""
    for tool in tools:
        if tool["name"] == name:
            schema = tool.get("inputSchema")
            return schema if isinstance(schema, dict) else None
    return None


Standing = Callable[[Upstream], "Lists | None"]
"""The lists that stand for an upstream that has not served yet (the catalog remembered from the last
run, see `core.memory`), or None."""
Lists = tuple[Mapping[ListKind, list[dict[str, Any]]], Mapping[str, str]]
"""An upstream's lists by kind, and the tools it left out (`Upstream.invalid_tools`)."""


def build(upstreams: Iterable[tuple[str, Upstream]], *, standing: Standing | None = None) -> Catalog:
    """A catalog over `(namespace, upstream)` pairs, in registry order.

    An upstream counts once it has served: one that went down keeps its names while it restarts, so
    a call gets an error naming it and its state (never "Unknown tool"), clients' lists do not churn
    with every restart, and a name two servers share (`namespace = ""`) never moves to the other
    one while the first is down. One that has not served counts with the lists `standing` gives for
    it (remembered from the last run), if any: they are named in `Catalog.remembered`.
    """
    catalog = Catalog()
    remembered: list[str] = []
    for namespace, upstream in upstreams:
        if namespace:
            catalog.namespaces[namespace] = upstream
        else:
            catalog.unprefixed.append(upstream)
        lists: Lists = (upstream.lists, upstream.invalid_tools)
        if not upstream.served:
            memory = standing(upstream) if standing is not None else None
            if memory is None:
                continue
            lists = memory
            remembered.append(upstream.name)
        _add_tools(catalog, namespace, upstream, *lists)
        _add_prompts(catalog, namespace, upstream, lists[0])
        _add_resources(catalog, namespace, upstream, lists[0])
    catalog.remembered = frozenset(remembered)
    return catalog


def _exposed(namespace: str, name: str) -> str:
    return f"{namespace}{SEPARATOR}{name}" if namespace else name


def _claim(
    catalog: Catalog,
    routes: dict[str, Route],
    exposed: str,
    upstream: Upstream,
    item: dict[str, Any],
    original: str,
    *,
    kind: str,
    taken: str,
    fix: str,
) -> bool:
    """Route `exposed` to `upstream`'s `original`; one already routed is a problem (first come wins)."""
    if exposed in routes:
        why = taken.format(exposed=exposed, other=routes[exposed].upstream.name)
        catalog.problems.append(Problem(upstream.name, kind, original, why, fix))
        return False
    routes[exposed] = Route(upstream, original, item)
    return True


def _add_tools(
    catalog: Catalog,
    namespace: str,
    upstream: Upstream,
    lists: Mapping[ListKind, list[dict[str, Any]]],
    invalid_tools: Mapping[str, str],
) -> None:
    aliases = upstream.config.aliases
    for original, reason in invalid_tools.items():
        why = f"invalid x-mcp-header annotation ({reason}): withheld, as 2026-07-28 clients must"
        fix = "the server must annotate only string, integer or boolean properties, with unique header names"
        catalog.problems.append(Problem(upstream.name, "tool", original, why, fix))
    for tool in lists["tools"]:
        original = str(tool.get("name", ""))
        exposed = aliases.get(original) or _exposed(namespace, original)
        fix = f'add `aliases = {{ "{original}" = "<short_name>" }}` to [servers.{upstream.name}]'
        if not TOOL_NAME_RE.match(exposed):
            why = (
                f"exposed name {exposed!r} is {len(exposed)} characters (max 64)"
                if len(exposed) > 64
                else f"exposed name {exposed!r} has characters outside A-Z a-z 0-9 _ -"
            )
            catalog.problems.append(Problem(upstream.name, "tool", original, why, fix))
            continue
        taken = "exposed name {exposed!r} is already taken by {other}"
        if _claim(
            catalog, catalog.tool_routes, exposed, upstream, tool, original, kind="tool", taken=taken, fix=fix
        ):
            catalog.tools.append(expose_item(tool, namespace, name=exposed))


def _add_prompts(
    catalog: Catalog, namespace: str, upstream: Upstream, lists: Mapping[ListKind, list[dict[str, Any]]]
) -> None:
    fix = f"give [servers.{upstream.name}] another namespace"
    taken = "exposed name {exposed!r} is already taken by {other}"
    for prompt in lists["prompts"]:
        original = str(prompt.get("name", ""))
        exposed = _exposed(namespace, original)
        if _claim(
            catalog,
            catalog.prompt_routes,
            exposed,
            upstream,
            prompt,
            original,
            kind="prompt",
            taken=taken,
            fix=fix,
        ):
            catalog.prompts.append({**prompt, "name": exposed})


def _add_resources(
    catalog: Catalog, namespace: str, upstream: Upstream, lists: Mapping[ListKind, list[dict[str, Any]]]
) -> None:
    fix = f"give [servers.{upstream.name}] a namespace"
    for resource in lists["resources"]:
        original = str(resource.get("uri", ""))
        exposed = expose_uri(namespace, original)
        taken = "URI is already served by {other}"
        if _claim(
            catalog,
            catalog.resource_routes,
            exposed,
            upstream,
            resource,
            original,
            kind="resource",
            taken=taken,
            fix=fix,
        ):
            catalog.resources.append(expose_item(resource, namespace, uri=exposed))
    for template in lists["resource_templates"]:
        original = str(template.get("uriTemplate", ""))
        exposed = expose_uri(namespace, original)
        taken, kind = "URI template is already served by {other}", "resource template"
        if _claim(
            catalog,
            catalog.template_routes,
            exposed,
            upstream,
            template,
            original,
            kind=kind,
            taken=taken,
            fix=fix,
        ):
            catalog.resource_templates.append(expose_item(template, namespace, uriTemplate=exposed))


# --- rewriting URIs inside results ---------------------------------------------------------------


def rewrite_content_uris(items: list[Any], namespace: str) -> list[Any]:
    """Expose the URIs of resource links and embedded resources in a content list (and of an
    embedded UI resource's `_meta`)."""
    if not namespace:
        return items
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            kind = item.get("type")
            if kind == "resource_link" and isinstance(item.get("uri"), str):
                item = {**item, "uri": expose_uri(namespace, item["uri"])}
            elif kind == "resource" and isinstance(item.get("resource"), dict):
                inner = item["resource"]
                if isinstance(inner.get("uri"), str):
                    inner = expose_item(inner, namespace, uri=expose_uri(namespace, inner["uri"]))
                    item = {**item, "resource": inner}
        out.append(item)
    return out
