"""When each Kafka request of a router's transaction leaves and is answered.

A transaction at a steady rate is a chain of round trips to the broker: the
offsets (AddOffsetsToTxn, TxnOffsetCommit), the partitions (AddPartitionsToTxn),
the records (Produce), the commit (EndTxn), and the next batch's Fetch.
kafka-python sends one transactional request at a time and no Produce while
one is in flight, so the chain's length is the transaction's fixed cost.
:class:`Timeline` reads the times from kafka-python's own debug lines of each
request and response (``kafka.net.connection``: the request object is in the
record's arguments; nothing is formatted), next to the router loop's steps.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.router_load import report

#: The requests of a transaction, in the order kafka-python usually sends them.
REQUESTS = ("AddOffsetsToTxn", "AddPartitionsToTxn", "TxnOffsetCommit", "Produce", "EndTxn",
            "Fetch")
_LOGGER = "kafka.net.connection"
#: What happens in fewer transactions than this is left out of the report.
MIN_SHARE = 0.25


class _Requests(logging.Handler):
    """Collects (time, "sent"/"answered", request name) from kafka-python's debug lines."""

    def __init__(self, out: list[tuple[float, str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.out = out
        self.pending: dict[tuple[int, int], str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if not isinstance(args, tuple) or len(args) < 3:
            return
        now = time.perf_counter()
        if record.msg.startswith("%s Request %d"):
            name = type(args[2]).__name__.removesuffix("Request")
            self.pending[(id(args[0]), args[1])] = name
            self.out.append((now, "sent", name))
        elif record.msg.startswith("%s: Response %d"):
            name = self.pending.pop((id(args[0]), args[1]), "")
            if name:
                self.out.append((now, "answered", name))


class Timeline:
    """Loop steps and Kafka requests on one clock; :meth:`report` per transaction."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []

    def step(self, edge: str, label: str) -> None:
        """A loop step begins or ends (``edge``: "begins" or "ends")."""
        self.events.append((time.perf_counter(), edge, label))

    @contextmanager
    def recording(self) -> Iterator[None]:
        """kafka-python's request lines are collected while this is open (and not
        passed on to the process's own log handlers)."""
        logger = logging.getLogger(_LOGGER)
        saved = logger.level, logger.propagate
        handler = _Requests(self.events)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]

    def report(self, rate: float, start_label: str, skip: int = 1) -> None:
        """Per transaction (from one ``start_label`` step to the next), the median time
        of each request's first send and answer, in ms after the step began."""
        events = sorted(self.events)
        starts = [i for i, (_, edge, label) in enumerate(events)
                  if edge == "begins" and label == start_label][skip:]
        offsets: dict[tuple[str, str], list[float]] = {}
        for a, b in zip(starts, starts[1:], strict=False):
            t0 = events[a][0]
            firsts: dict[tuple[str, str], float] = {}
            for t, edge, what in events[a:b]:
                firsts.setdefault((edge, what), (t - t0) * 1000)
            for key, ms in firsts.items():
                offsets.setdefault(key, []).append(ms)
        if not any(name in REQUESTS for (_, name) in offsets):
            print("  timeline: no requests seen (kafka-python's debug lines changed?)")
            return
        rows: list[tuple[float, str, Any]] = []
        for (edge, what), values in offsets.items():
            share = len(values) / max(len(starts) - 1, 1)
            if share < MIN_SHARE:
                continue  # heartbeats, metadata refreshes: not the transaction's own
            rows.append((statistics.median(values), f"{what} {edge}", share))
        print(f"  one transaction at {rate:,.0f}/s, from the routing's start (median ms; "
              "share of transactions where it happened)")
        for ms, what, share in sorted(rows):
            report(f"loop at {rate:,.0f}/s: timeline, {what}", ms, "ms", f"in {share:.0%}")
