"""Prometheus figures of the loop service: open and overdue clocks by kind,
escalations, acknowledgements. Labels are clock kinds only, never ids."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from broker.loop.clocks import ClockState


class LoopMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.open = Gauge("safeshare_clocks_open", "Statutory clocks running", ["kind"],
                          registry=r)
        self.overdue = Gauge("safeshare_clocks_overdue", "Open clocks past their deadline",
                             ["kind"], registry=r)
        self.escalations = PromCounter("safeshare_escalations", "Escalation notices committed",
                                       ["kind", "tier"], registry=r)
        self.acks = PromCounter("safeshare_acknowledgements", "Acknowledgements read", registry=r)
        self.aborted = PromCounter("safeshare_loop_turns_aborted",
                                   "Loop turns aborted and replayed", registry=r)
        self._kinds: set[str] = set()

    def clocks(self, open_clocks: list[ClockState], now_ms: int) -> None:
        """Set the gauges from every open clock (a scan: call every few seconds)."""
        opened = Counter(c.kind for c in open_clocks)
        late = Counter(c.kind for c in open_clocks if c.due_ms <= now_ms)
        self._kinds |= set(opened)
        for kind in self._kinds:
            self.open.labels(kind).set(opened.get(kind, 0))
            self.overdue.labels(kind).set(late.get(kind, 0))
