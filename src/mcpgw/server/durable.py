"""Answers that wait for their audit row: among replicas (`[cluster]`), no answered call goes unlogged.

Owns: the rule that a request served by a replica is answered only once its audit row is
committed (`AuditLog.commit`: the writer commits at once for it, so rows still go in batches
under load), and that a cancelled request's row is committed too. A single gateway keeps the
log off the hot path (a `kill -9` may lose the last batch interval's rows); a replica of
several is killed and replaced as a matter of course, and the audit trail of a cluster must hold
every call a client saw answered.
"""

from __future__ import annotations

import anyio

from mcpgw.audit import Step
from mcpgw.core.gateway import Gateway


def confirms(gateway: Gateway) -> bool:
    """Whether `gateway`'s answers wait for their rows."""
    return gateway.cluster is not None and gateway.audit is not None


async def committed(gateway: Gateway, step: Step) -> None:
    """Record `step` and return once it is committed (shielded: a cancelled request's row too)."""
    if gateway.audit is not None:
        with anyio.CancelScope(shield=True):
            await gateway.audit.commit(step)
