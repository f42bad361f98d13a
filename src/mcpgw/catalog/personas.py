"""Personas: least-privilege views of the catalog, enforced on every request.

Owns: turning a `PersonaConfig` and the current `Catalog` into a `View` (what
the persona lists, under which names, with which schemas), resolving a
requested name through that view (anything it does not list gets exactly the
error of a name that does not exist), hidden fixed arguments and narrowed
argument schemas, and the search-mode pair of tools. A view is immutable and
rebuilt with the catalog, so a list change upstream is filtered before anyone
can see it.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcpgw.catalog import Catalog, Route, input_schema, template_matches
from mcpgw.catalog import workflows as workflows_mod
from mcpgw.config import DEFAULT_PERSONA, Filter, PersonaConfig, Registry
from mcpgw.errors import ConfigError, InvalidRequest, NotFound, ResourceNotFound, UnknownPersona

if TYPE_CHECKING:
    from mcpgw.upstream import Upstream

logger = logging.getLogger("mcpgw.personas")

SEARCH_TOOL = "search_tools"
CALL_TOOL = "call_tool"
SEARCH_LIMIT = 10


def resolve(registry: Registry, persona: str | None) -> str | None:
    """The persona a request gets: the one chosen, else `default` if configured, else none."""
    if persona is None:
        return DEFAULT_PERSONA if DEFAULT_PERSONA in registry.personas else None
    if persona not in registry.personas:
        known = ", ".join(registry.personas) or "none are configured"
        raise UnknownPersona(f"unknown persona {persona!r} (known: {known})")
    return persona


_NOTHING = Filter(allow=[])


def resource_rules(persona: PersonaConfig) -> Filter:
    """The persona's rules for resources and templates.

    Least privilege: a persona that names its tools (`allow`) and says nothing of resources sees
    none; one that narrows nothing (no `allow`) keeps seeing every resource of its servers.
    """
    if "resources" in persona.model_fields_set or "allow" not in persona.model_fields_set:
        return persona.resources
    return _NOTHING


def prompt_rules(persona: PersonaConfig) -> Filter:
    """The persona's rules for prompts, by the same least-privilege rule as `resource_rules`."""
    if "prompts" in persona.model_fields_set or "allow" not in persona.model_fields_set:
        return persona.prompts
    return _NOTHING


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _allowed(name: str, allow: list[str], deny: list[str]) -> bool:
    return _matches(name, allow) and not _matches(name, deny)


def _read_only(tool: Mapping[str, Any]) -> bool:
    annotations = tool.get("annotations") or {}
    return annotations.get("readOnlyHint") is True and annotations.get("destructiveHint") is not True


@dataclass(frozen=True)
class ToolEntry:
    """A tool as one persona sees it, and how to reach it in the catalog."""

    listed: dict[str, Any]
    target: str
    """The tool's name in the full catalog."""
    fixed: dict[str, Any]
    narrow: dict[str, dict[str, Any]]
    workflow: str | None = None
    """A workflow tool's name in `[workflows]` (its steps run by `core.workflows`); None: an upstream's."""


@dataclass
class View:
    persona: str | None
    search: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    resource_templates: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    entries: dict[str, ToolEntry] = field(default_factory=dict)
    prompt_names: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    _config: PersonaConfig | None = None
    _servers: frozenset[str] | None = None
    """The servers this persona may reach (`servers`), by name: never decided by a name's prefix,
    which two servers share when both use `namespace = ""`."""
    _index: Any = None
    _schemas: tuple[list[dict[str, Any]], int, dict[str, int]] | None = None
    """`input_schema`'s index: the listing it was made of, its length then, each name's first place."""

    def may_list(self, server: str, exposed: str) -> bool:
        """Whether this persona's rules let it list a tool of `server` exposed as `exposed`: `server`
        is among its servers and the name passes its allow and deny rules. For a tool whose definition
        is not known (its server never started), so the rules on definitions (`read_only`) cannot apply."""
        if self._servers is not None and server not in self._servers:
            return False
        config = self._config
        return config is None or (_matches(exposed, config.allow) and not _matches(exposed, config.deny))

    # --- what the client lists ------------------------------------------------------------------

    @property
    def listed_tools(self) -> list[dict[str, Any]]:
        return _search_tools() if self.search else self.tools

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """The listed tool's input schema, as `catalog.input_schema` finds it in `listed_tools`.

        Every HTTP `tools/call` asks (the `Mcp-Param-*` check), and scanning a listing of hundreds of
        tools each time was tens of microseconds, so names are indexed by their place. A listing is a
        mutable list: the index is made again when it is another list or another length, a hit is
        checked against the listing as it is now, and a name not indexed is looked for by a scan."""
        if self.search:
            return input_schema(self.listed_tools, name)  # two tools, made afresh each time
        tools = self.tools
        index = self._schemas
        if index is None or index[0] is not tools or index[1] != len(tools):
            places: dict[str, int] = {}
            for at, tool in enumerate(tools):
                places.setdefault(tool["name"], at)
            index = self._schemas = (tools, len(tools), places)
        place = index[2].get(name)
        if place is not None and tools[place]["name"] == name:
            return input_schema((tools[place],), name)
        return input_schema(tools, name)

    # --- enforcement ------------------------------------------------------------------------------

    def tool(self, name: str) -> ToolEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise NotFound(f"Unknown tool: {name}")
        return entry

    def arguments(self, entry: ToolEntry, arguments: dict[str, Any] | None) -> dict[str, Any] | None:
        """The arguments sent upstream: the client's, checked against narrowed schemas, plus fixed ones."""
        if not entry.fixed and not entry.narrow:
            return arguments
        given = dict(arguments or {})
        for key in entry.fixed:
            if key in given:
                raise InvalidRequest(f"{entry.listed['name']}: argument {key!r} is not accepted by this tool")
        for key, schema in entry.narrow.items():
            if key in given:
                _check(entry.listed["name"], key, given[key], schema)
        return {**given, **entry.fixed}

    def check_prompt(self, name: str) -> None:
        if name not in self.prompt_names:
            raise NotFound(f"Unknown prompt: {name}")

    def check_resource(self, uri: str, catalog: Catalog) -> Route:
        """A read is allowed only for a URI this view lists, or one a template this view lists produces.

        The same for every view, the full one included: a URI the catalog does not list or template
        is never forwarded, so no upstream is probed with arbitrary URIs under its prefix. Returns the
        catalog's route for it, so the caller does not route it again.
        """
        error = ResourceNotFound(uri)
        if self._config is not None:
            rules = resource_rules(self._config)
            if not _allowed(uri, rules.allow, rules.deny):
                raise error
        try:
            route = catalog.resource(uri)
        except NotFound:
            raise error from None
        if self._servers is not None and route.upstream.name not in self._servers:
            raise error
        if any(r["uri"] == uri for r in self.resources) or any(
            template_matches(str(t.get("uriTemplate", "")), uri) for t in self.resource_templates
        ):
            return route
        raise error

    # --- search mode ------------------------------------------------------------------------------

    def search_tools(self, query: str, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
        """Permitted tools ranked by BM25 over name, description and parameter names."""
        # fastmcp's BM25 index is the search its own search transform uses; that transform works on
        # fastmcp's server pipeline, which mcpgw does not run, so the index is used directly.
        from fastmcp.server.transforms.search.bm25 import _BM25Index

        if self._index is None:
            index = _BM25Index()
            index.build([_searchable(tool) for tool in self.tools])
            self._index = index
        hits: list[int] = self._index.query(query, max(1, min(limit, 50)))
        return [self.tools[i] for i in hits]


def _searchable(tool: Mapping[str, Any]) -> str:
    parts = [
        str(tool.get("name", "")).replace("__", " ").replace("_", " "),
        str(tool.get("description") or ""),
    ]
    properties = (tool.get("inputSchema") or {}).get("properties") or {}
    for name, schema in properties.items():
        parts.append(str(name))
        if isinstance(schema, dict) and schema.get("description"):
            parts.append(str(schema["description"]))
    return " ".join(parts)


def _check(tool: str, key: str, value: Any, schema: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise InvalidRequest(f"{tool}: argument {key!r}: {exc.message}") from None


def _search_tools() -> list[dict[str, Any]]:
    return [
        {
            "name": SEARCH_TOOL,
            "description": "Search the tools available to you by what they do. Returns matching tools "
            f"with their argument schemas; call one with {CALL_TOOL}.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Words describing what you want to do."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": SEARCH_LIMIT},
                },
                "required": ["query"],
            },
            "annotations": {"readOnlyHint": True},
        },
        {
            "name": CALL_TOOL,
            "description": f"Call a tool found with {SEARCH_TOOL}, by its name, with its arguments.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The tool's name, as search returned it."},
                    "arguments": {"type": "object", "description": "The tool's arguments."},
                },
                "required": ["name"],
            },
        },
    ]


# --- building views -------------------------------------------------------------------------------


def full_view(catalog: Catalog, *, registry: Registry | None = None) -> View:
    """Everything, unchanged: the view when no persona applies (with `registry`, its workflows too)."""
    workflows = list(workflows_mod.listed(registry, catalog))
    view = View(
        persona=None,
        tools=[*catalog.tools, *(tool for _, tool in workflows)] if workflows else catalog.tools,
        resources=catalog.resources,
        resource_templates=catalog.resource_templates,
        prompts=catalog.prompts,
    )
    view.entries = {t["name"]: ToolEntry(t, t["name"], {}, {}) for t in catalog.tools}
    view.entries |= {t["name"]: ToolEntry(t, t["name"], {}, {}, workflow=name) for name, t in workflows}
    if registry is not None:
        view.warnings = workflows_mod.problems(registry, catalog)
    view.prompt_names = {p["name"] for p in catalog.prompts}
    return view


def build_view(name: str, persona: PersonaConfig, catalog: Catalog, registry: Registry) -> View:
    """The persona's view of `catalog`; overrides of tools that do not exist are a `ConfigError`."""
    servers = frozenset(persona.servers) if persona.servers is not None else None
    view = View(persona=name, search=persona.catalog == "search", _config=persona, _servers=servers)

    def in_servers(upstream: Upstream) -> bool:
        return servers is None or upstream.name in servers

    used_allow: set[str] = set()
    used_deny: set[str] = set()
    workflows = list(workflows_mod.listed(registry, catalog))
    tools = [(tool, None) for tool in catalog.tools] + [(tool, name) for name, tool in workflows]
    for tool, workflow in tools:
        exposed = tool["name"]
        # `servers` names upstream servers: a workflow is listed by the name rules, and each of its
        # steps is called under all of this persona's rules (`core.workflows`).
        if workflow is None and not in_servers(catalog.tool_routes[exposed].upstream):
            continue
        used_allow.update(p for p in persona.allow if fnmatch.fnmatchcase(exposed, p))
        denied = [p for p in persona.deny if fnmatch.fnmatchcase(exposed, p)]
        used_deny.update(denied)
        if not _matches(exposed, persona.allow) or denied:
            continue
        if persona.read_only and not _read_only(tool):
            continue
        override = persona.tools.get(exposed)
        listed = copy.deepcopy(tool)
        fixed: dict[str, Any] = {}
        narrow: dict[str, dict[str, Any]] = {}
        if override is not None:
            if override.name:
                listed["name"] = override.name
            if override.description is not None:
                listed["description"] = override.description
            fixed, narrow = dict(override.fixed), dict(override.narrow)
            schema = listed.setdefault("inputSchema", {"type": "object"})
            properties = schema.setdefault("properties", {})
            for key in fixed:
                properties.pop(key, None)
            if "required" in schema:
                schema["required"] = [r for r in schema["required"] if r not in fixed]
            for key, narrowed in narrow.items():
                properties[key] = narrowed
        if listed["name"] in view.entries:
            raise ConfigError(
                f"persona {name!r}: two tools would both be named {listed['name']!r}",
                key=f"personas.{name}.tools",
            )
        view.entries[listed["name"]] = ToolEntry(listed, exposed, fixed, narrow, workflow)
        view.tools.append(listed)

    _check_overrides(name, persona, catalog, view, workflows={tool["name"] for _, tool in workflows})
    if workflows:
        reachable = {entry.target for entry in view.entries.values()}
        view.warnings += workflows_mod.step_warnings(name, registry, reachable)
    for pattern in persona.allow:
        if pattern not in used_allow and pattern != "*":
            view.warnings.append(f"persona {name!r}: allow rule {pattern!r} matches no tool")
    for pattern in persona.deny:
        if pattern not in used_deny:
            view.warnings.append(f"persona {name!r}: deny rule {pattern!r} matches no tool")

    rules = resource_rules(persona)
    for resource in catalog.resources:
        route = catalog.resource_routes[resource["uri"]]
        if in_servers(route.upstream) and _allowed(resource["uri"], rules.allow, rules.deny):
            view.resources.append(resource)
    for template in catalog.resource_templates:
        uri_template = str(template.get("uriTemplate", ""))
        route = catalog.template_routes[uri_template]
        if in_servers(route.upstream) and _allowed(uri_template, rules.allow, rules.deny):
            view.resource_templates.append(template)
    rules = prompt_rules(persona)
    for prompt in catalog.prompts:
        route = catalog.prompt_routes[prompt["name"]]
        if in_servers(route.upstream) and _allowed(prompt["name"], rules.allow, rules.deny):
            view.prompts.append(prompt)
            view.prompt_names.add(prompt["name"])
    return view


def _check_overrides(
    name: str, persona: PersonaConfig, catalog: Catalog, view: View, *, workflows: set[str]
) -> None:
    for tool_name in persona.tools:
        if tool_name in catalog.tool_routes or tool_name in workflows:
            continue
        if tool_name in catalog.withheld:
            view.warnings.append(
                f"persona {name!r}: override of {tool_name!r} not checked: the tool is withheld"
            )
            continue
        namespace = tool_name.split("__", 1)[0] if "__" in tool_name else ""
        upstream = catalog.namespaces.get(namespace)
        if upstream is not None and upstream.state != "ready":
            # Its server is down: the override cannot be checked now, and it does no harm.
            view.warnings.append(
                f"persona {name!r}: override of {tool_name!r} not checked: "
                f"server {upstream.name} is {upstream.state}"
            )
            continue
        raise ConfigError(
            f"persona {name!r}: override of tool {tool_name!r}, which does not exist in the catalog",
            key=f"personas.{name}.tools.{tool_name}",
        )
