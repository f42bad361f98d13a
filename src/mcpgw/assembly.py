"""The composition root: one function builds the whole gateway from a registry.

Owns: deciding which parts a gateway is made of and handing each its
collaborators through its constructor: the upstream secrets, the data rules,
the audit log, the pin/poisoning policy, the metrics, the replicas' shared state (`[cluster]`),
then the `Gateway` over them. `mcpgw
serve`, every CLI command that starts upstreams, the benchmark and the tests
all build through here, so what they run is what is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcpgw import audit as audit_mod
from mcpgw import version
from mcpgw.audit import AuditLog
from mcpgw.config import Registry
from mcpgw.core.gateway import Gateway
from mcpgw.core.memory import CatalogMemory, memory_path
from mcpgw.core.reload import Parts
from mcpgw.security.dataguard import Guard
from mcpgw.security.flows import Flows
from mcpgw.security.pins import lock_path
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
        instance = str(registry_path.resolve()) if registry_path else None
        settings = registry.audit
        if registry.cluster is not None and not settings.instance:  # one log, one name per replica
            settings = settings.model_copy(update={"instance": registry.cluster.replica_name()})
        audit_log = audit_mod.open_for(settings, source=source, detectors=detectors, instance=instance)
    else:
        audit_log = audit
    counted = None
    if metrics and purpose == "serve":
        from mcpgw.observe.metrics import Metrics  # prometheus-client: about 50 ms, only when metrics are on

        counted = Metrics(version=version())
    trust = Trust.for_registry(registry, registry_path, audit=audit_log, reporting=purpose == "serve")
    memory = None
    if purpose == "serve" and registry_path is not None and registry.gateway.remember_catalog:
        memory = CatalogMemory.load(memory_path(registry_path), registry)
    cluster = None
    if registry.cluster is not None and purpose == "serve":
        from mcpgw.cluster import Cluster  # redis-py is imported on first use, never without [cluster]

        cluster = Cluster(registry.cluster)
    gateway = Gateway(
        registry,
        audit=audit_log,
        guard=guard,
        trust=trust,
        secrets=secrets,
        in_process=in_process,
        metrics=counted,
        # Always there when serving: a reload may add flow policies, and the sessions' state must
        # then already be kept (the policies themselves are read from the registry per call).
        flows=None if purpose == "listing" else Flows(),
        memory=memory,
        cluster=cluster,
    )
    return Assembly(gateway=gateway, trust=trust, audit=audit_log)


def reload_parts(registry: Registry, *, registry_path: Path | None, running: Gateway) -> Parts:
    """The parts `registry` makes, for `running.reconfigure` (a live reload), built as above.

    The running audit log stays (`[audit]` changes wait for a restart, see `core.reload`); the
    running pin policy stays too unless what it is built from changed, so definitions already
    judged are not judged (and reported) again. Raises `ConfigError` when a part cannot be built.
    """
    secrets = credentials.load_secrets(registry.gateway)
    guard = Guard.from_registry(registry)
    trust = running.trust
    if trust is None or (trust.path, trust.mode, trust.max_description) != (
        lock_path(registry, registry_path),
        registry.gateway.mode,
        registry.security.max_description,
    ):
        trust = Trust.for_registry(registry, registry_path, audit=running.audit, reporting=True)
    return Parts(registry, guard=guard, trust=trust, secrets=secrets)
