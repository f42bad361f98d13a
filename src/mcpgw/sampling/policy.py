"""Who answers a sampling request, and which route: `[sampling]` read for one request.

Owns the policy (`relay` to the client, `llm` through a route, `auto`,
`deny`) that applies to a server and persona; which capabilities mcpgw
declares to an upstream (sampling only when something can answer it,
elicitation only with `elicitation = "relay"`); and the chain of routes a
request tries, in order: the route its model hints or priorities pick, then
the persona's (else the server's, else `[sampling].fallbacks`) fallbacks.
Pure functions of the settings: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcpgw.config import DEFAULT_PERSONA, SamplingPolicy, SamplingRoute, SamplingScope, SamplingSettings
from mcpgw.errors import SamplingRefused


def _scope(scopes: Mapping[str, SamplingScope], name: str | None) -> SamplingScope | None:
    return scopes.get(name) if name is not None else None


def who_answers(settings: SamplingSettings, server: str, persona: str | None) -> SamplingPolicy:
    """`deny` from the server or the persona wins; else the persona's, the server's, the default."""
    by_server = _scope(settings.servers, server)
    by_persona = _scope(settings.personas, persona or DEFAULT_PERSONA)
    chosen = [s.policy for s in (by_persona, by_server) if s is not None and s.policy is not None]
    if "deny" in chosen:
        return "deny"
    return chosen[0] if chosen else settings.policy


def declares_sampling(settings: SamplingSettings, server: str) -> bool:
    """Whether mcpgw declares sampling to this upstream (so it may ask, and offers its sampling tools).

    Unless it is denied for everyone: a request is relayed to a caller that can sample (or answered
    by a route), and refused, as an error the upstream sees, when nothing can answer it. Not
    declaring it would keep an upstream from asking even callers that can answer, unlike a
    direct connection.
    """
    return who_answers(settings, server, None) != "deny" or any(
        s.policy not in (None, "deny") for s in settings.personas.values()
    )


def declares_elicitation(settings: SamplingSettings, server: str) -> bool:
    """Whether mcpgw declares elicitation to this upstream: unless `elicitation = "deny"` or denied."""
    return settings.elicitation != "deny" and who_answers(settings, server, None) != "deny"


def chain(
    settings: SamplingSettings, server: str, persona: str | None, params: Mapping[str, Any]
) -> list[str]:
    """Routes to try, in order: the one the request's model preferences pick, then the fallbacks.

    A persona's (else a server's) `routes` list is its own fallback chain, in its order;
    without one, `[sampling].fallbacks` (else every route in file order) is.
    """
    by_persona = _scope(settings.personas, persona or DEFAULT_PERSONA)
    by_server = _scope(settings.servers, server)
    limits = [s.routes for s in (by_persona, by_server) if s is not None and s.routes is not None]

    def allowed(name: str) -> bool:
        return all(name in limit for limit in limits)

    order = limits[0] if limits else (settings.fallbacks or list(settings.routes))
    order = [r for r in order if allowed(r)]
    if not order:
        raise SamplingRefused(
            f"no sampling route is allowed for persona {persona or DEFAULT_PERSONA!r} on server {server!r}"
        )
    candidates = order + [r for r in settings.routes if r not in order and allowed(r)]
    first = _preferred(candidates, settings.routes, params.get("modelPreferences")) or order[0]
    return [first, *[r for r in order if r != first]]


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
