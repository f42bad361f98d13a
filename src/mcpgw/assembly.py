"""The composition root: one function builds the whole gateway from a registry.

Owns: deciding which parts a gateway is made of and handing each its
collaborators through its constructor: the upstream secrets, the data rules,
the audit log, the pin/poisoning policy, the metrics, then the `Gateway` over them. `mcpgw
serve`, every CLI command that starts upstreams, the benchmark and the tests
all build through here, so what they run is what is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcpgw import audit as audit_mod
from mcpgw.audit import AuditLog
from mcpgw.config import Registry
from mcpgw.core.gateway import Gateway
from mcpgw.observe.metrics import Metrics
from mcpgw.security.dataguard import Guard
from mcpgw.security.trust import Trust
from mcpgw.upstream import credentials

Purpose = Literal["serve", "listing"]
"""`serve`: the gateway clients talk to (audited, the lock file watched, problems logged once).
`listing`: a one-shot look by the CLI (`mcpgw tools`): the same policy, nothing logged or audited."""


@dataclass(frozen=True)
class Assembly:
    """A built gateway and the parts its builder may still need to show or close."""

    gateway: Gateway
    trust: Trust
    audit: AuditLog | None


def build_gateway(
    registry: Registry,
    *,
    registry_path: Path | None = None,
    purpose: Purpose = "serve",
    audit: AuditLog | Literal["registry"] | None = "registry",
    in_process: Mapping[str, Any] | None = None,
    metrics: bool = False,
) -> Assembly:
    """Build the gateway `registry` describes.

    `audit`: "registry" opens the log `[audit]` configures (for `serve`); a given `AuditLog` (tests)
    or None (no audit) is used as is. A listing never audits. `in_process`: servers of the registry
    served by an in-process lowlevel `Server` instead of their configured transport (the tests'
    parity harness; an embedder's own servers). `metrics`: count into a `Metrics` registry of the
    gateway's own (for `serve` when they are served: `[telemetry]`).
    """
    secrets = credentials.load_secrets(registry.gateway)  # first: a missing file stops before any write
    guard = Guard.from_registry(registry)
    if purpose == "listing":
        audit_log = None
    elif audit == "registry":
        source = str(registry_path) if registry_path else "the shipped default registry"
        detectors = guard.detectors_in_rules() if guard is not None else ()
        audit_log = audit_mod.open_for(registry.audit, source=source, detectors=detectors)
    else:
        audit_log = audit
    trust = Trust.for_registry(registry, registry_path, audit=audit_log, reporting=purpose == "serve")
    gateway = Gateway(
        registry,
        audit=audit_log,
        guard=guard,
        trust=trust,
        secrets=secrets,
        in_process=in_process,
        metrics=Metrics() if metrics and purpose == "serve" else None,
    )
    return Assembly(gateway=gateway, trust=trust, audit=audit_log)
