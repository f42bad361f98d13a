"""The Prometheus metrics of one gateway.

Owns: the gateway's own `CollectorRegistry` (never the process-wide one: a test or an
embedder may run several gateways in one process), every metric's name, help and
labels, what the call path counts (`request`, `refused`, `restarted`, `sampled`) and
the gauges read from the gateway only when scraped (`watch`, `track_sessions`), so a
scrape costs nothing between scrapes and the call path never updates a gauge.

Label values are bounded: methods are the MCP methods served, personas and servers
come from the registry, tools only from the catalog (`observe.context.UNKNOWN` for any other name a
client sends), outcomes from the audit log's closed set, auth reasons from `REASONS`.
Serving it (`/metrics`, or a listener of its own) belongs to `server.scrape`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REASONS = (
    "no_token",
    "invalid_token",
    "insufficient_scope",
    "persona_not_granted",
    "keys_unavailable",
    "expired",
)
"""Why an HTTP request was refused under `[auth]` (`mcpgw_auth_refusals_total{reason}`)."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Seconds: a request, or its upstream share (a local tool answers in a millisecond, a model in a minute)."""
GATEWAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
"""Seconds the gateway adds to a request: fractions of a millisecond when all is well."""


@dataclass(frozen=True)
class UpstreamSample:
    """One upstream as a scrape sees it."""

    name: str
    state: str
    in_flight: int
    """Calls holding one of its `max_concurrent` slots."""
    queued: int
    """Calls waiting for a slot."""
    tools: int


@dataclass(frozen=True)
class Snapshot:
    """The gateway's state at a scrape (`Metrics.watch`)."""

    upstreams: Sequence[UpstreamSample]
    states: Sequence[str]
    """Every state an upstream can be in: each gets a series, 1 for the current one."""
    in_flight: int
    """Client requests being served."""
    audit_queued: int | None = None
    """Audit rows waiting for the writer; None without an audit log."""
    audit_dropped: int = 0
    audit_written: int = 0


@dataclass
class _Series:
    """The label children one request kind updates, looked up once per label set."""

    total: Any
    upstream: Any
    added: Any


class Metrics:
    """Every metric of one gateway, in a registry of its own (`registry`)."""

    def __init__(self, *, version: str = "0") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("mcpgw_build", "The mcpgw version serving.", registry=r).info({"version": version})
        self._requests = Counter(
            "mcpgw_requests",
            "Client requests served (a workflow tool's steps each too), by MCP method, persona, upstream "
            "server, tool and outcome.",
            ["method", "persona", "server", "tool", "outcome"],
            registry=r,
        )
        self._seconds = Histogram(
            "mcpgw_request_duration_seconds",
            "Time to serve a client request, from its arrival at the handler to its answer.",
            ["method", "server", "tool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._upstream = Histogram(
            "mcpgw_upstream_duration_seconds",
            "The upstream's share of a request: its forward stage (queueing for a slot included).",
            ["method", "server", "tool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._added = Histogram(
            "mcpgw_gateway_duration_seconds",
            "The time the gateway itself adds to a request: its whole time less the upstream's share.",
            ["method", "server", "tool"],
            buckets=GATEWAY_BUCKETS,
            registry=r,
        )
        self._restarts = Counter(
            "mcpgw_upstream_restarts", "Restarts of an upstream after it failed.", ["server"], registry=r
        )
        self._refusals = Counter(
            "mcpgw_auth_refusals", "HTTP requests refused under [auth], by reason.", ["reason"], registry=r
        )
        self._sampling = Counter(
            "mcpgw_sampling_requests",
            "Upstreams' sampling requests, by the route that answered (or `client`), persona and outcome.",
            ["route", "persona", "outcome"],
            registry=r,
        )
        self._tokens = Counter(
            "mcpgw_sampling_tokens",
            "Model tokens used answering sampling requests, by route, persona and direction.",
            ["route", "persona", "direction"],
            registry=r,
        )
        self._cost = Counter(
            "mcpgw_sampling_cost_usd",
            "What answering sampling requests cost, in US dollars, by route and persona.",
            ["route", "persona"],
            registry=r,
        )
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._counts: dict[tuple[str, str, str, str, str], Any] = {}
        self._gauges = _Gauges()
        r.register(self._gauges)
        # The process's CPU, memory and open files, and the Python version: read when scraped.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    # --- what the call path counts ---------------------------------------------------------------

    def request(
        self,
        *,
        method: str,
        persona: str | None,
        server: str | None,
        tool: str | None,
        outcome: str,
        seconds: float,
        upstream_seconds: float,
    ) -> None:
        """One client request served: counted, and its time split into upstream and gateway shares."""
        server, tool = server or "", tool or ""
        key = (method, server, tool)
        series = self._series.get(key)
        if series is None:
            # prometheus_client's `labels()` validates and locks on every call; the children are
            # looked up once per label set instead (the sets are bounded: see the module docstring).
            series = self._series[key] = _Series(
                total=self._seconds.labels(*key),
                upstream=self._upstream.labels(*key),
                added=self._added.labels(*key),
            )
        count_key = (method, persona or "", server, tool, outcome)
        count = self._counts.get(count_key)
        if count is None:
            count = self._counts[count_key] = self._requests.labels(*count_key)
        count.inc()
        series.total.observe(seconds)
        if upstream_seconds > 0:
            series.upstream.observe(upstream_seconds)
        series.added.observe(max(seconds - upstream_seconds, 0.0))

    def refused(self, reason: str) -> None:
        """An HTTP request refused under `[auth]`; `reason` is one of `REASONS`."""
        self._refusals.labels(reason if reason in REASONS else "invalid_token").inc()

    def restarted(self, server: str) -> None:
        self._restarts.labels(server).inc()

    def sampled(
        self,
        *,
        route: str,
        persona: str | None,
        outcome: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        """One sampling request answered (or refused): its tokens and cost by route and persona."""
        persona = persona or ""
        self._sampling.labels(route, persona, outcome).inc()
        if input_tokens:
            self._tokens.labels(route, persona, "input").inc(input_tokens)
        if output_tokens:
            self._tokens.labels(route, persona, "output").inc(output_tokens)
        if cost_usd:
            self._cost.labels(route, persona).inc(cost_usd)

    # --- what is read when scraped ---------------------------------------------------------------

    def watch(self, source: Callable[[], Snapshot]) -> None:
        """Read the gateway's state from `source` at every scrape (the gateway registers itself)."""
        self._gauges.sources.append(source)

    def track_sessions(self, transport: str, count: Callable[[], int]) -> None:
        """Read the sessions open on `transport` at every scrape (the transport registers itself)."""
        self._gauges.sessions[transport] = count


class _Gauges(Collector):
    """The gauges, built from the gateway's state when scraped."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Snapshot]] = []
        self.sessions: dict[str, Callable[[], int]] = {}

    def describe(self) -> list[Metric]:
        return []  # what it yields depends on the gateway: nothing to check for clashes up front

    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        sessions = GaugeMetricFamily(
            "mcpgw_sessions_open", "Client sessions open, by transport.", labels=["transport"]
        )
        for transport, count in self.sessions.items():
            sessions.add_metric([transport], count())
        out.append(sessions)
        for source in self.sources:
            out.extend(_families(source()))
        return out


def _families(snap: Snapshot) -> list[Metric]:
    state = GaugeMetricFamily(
        "mcpgw_upstream_state",
        "1 for the state each upstream is in, 0 for the others.",
        labels=["server", "state"],
    )
    up = GaugeMetricFamily("mcpgw_upstream_up", "1 when the upstream is ready.", labels=["server"])
    busy = GaugeMetricFamily(
        "mcpgw_upstream_calls_in_flight", "Calls holding one of the upstream's slots.", labels=["server"]
    )
    queued = GaugeMetricFamily(
        "mcpgw_upstream_calls_queued", "Calls waiting for one of the upstream's slots.", labels=["server"]
    )
    tools = GaugeMetricFamily("mcpgw_upstream_tools", "Tools the upstream lists.", labels=["server"])
    for u in snap.upstreams:
        for name in snap.states:
            state.add_metric([u.name, name], 1.0 if u.state == name else 0.0)
        up.add_metric([u.name], 1.0 if u.state == "ready" else 0.0)
        busy.add_metric([u.name], u.in_flight)
        queued.add_metric([u.name], u.queued)
        tools.add_metric([u.name], u.tools)
    out: list[Metric] = [state, up, busy, queued, tools]
    out.append(GaugeMetricFamily("mcpgw_requests_in_flight", "Client requests being served.", snap.in_flight))
    if snap.audit_queued is not None:
        out.append(
            GaugeMetricFamily(
                "mcpgw_audit_queue_depth", "Audit rows waiting to be written.", value=snap.audit_queued
            )
        )
        out.append(
            CounterMetricFamily(
                "mcpgw_audit_rows_dropped",
                "Audit rows dropped: the retry buffer was full while the disk failed.",
                value=snap.audit_dropped,
            )
        )
        out.append(
            CounterMetricFamily("mcpgw_audit_rows_written", "Audit rows written.", value=snap.audit_written)
        )
    return out
