"""Statutory clocks: the cost of a tick, memory per open clock, and how soon an
escalation is readable after its deadline. Prints figures; never passes or fails.

    .venv/bin/python -m bench loop
    .venv/bin/python bench/bench_loop.py [--clocks N] [--only tick,memory,latency]

- tick: ``Clocks.due`` (a heap, lazy deletion) against ``Clocks.due_plainly``
  (a scan of every open clock, the plain twin) with ``--clocks`` open
  (default 1,000,000), for a tick that finds nothing due and one that finds
  100 due; the ratio plain / heap is measured in the same run.
- memory: bytes per open clock (tracemalloc) while ``--clocks`` are started.
- latency: a loop service on a real broker with 200 clocks falling due over
  ~10 s of wall-clock time; for each escalation, the time from its deadline to
  a ``read_committed`` consumer receiving the notice: p50 / p99 (aim p99 < 1 s).

Each figure is printed for people and once more as ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.loop.calendar import MS_PER_HOUR  # noqa: E402
from broker.loop.clocks import ClockRule, Clocks, ClockState, Measure  # noqa: E402

RULE = ClockRule(kind="TRIAGE_RED", measure=Measure.ELAPSED, duration_ms=4 * MS_PER_HOUR,
                 stops_on=frozenset({"TRIAGE"}))
T0 = 1_780_000_000_000
ESCALATE = ("torbay-mash-managers", "torbay-head-of-service")


def figure(name: str, value: float, unit: str, text: str) -> None:
    print(f"  {text}", flush=True)
    print("BENCH " + json.dumps({"name": name, "value": round(value, 3), "unit": unit}),
          flush=True)


def _state(i: int, start: int) -> ClockState:
    event_id = str(uuid.UUID(int=i))
    return ClockState(clock_id=f"TRIAGE_RED:{event_id}:torbay-mash", kind="TRIAGE_RED",
                      event_id=event_id, subject="ab" * 32, owner="torbay-mash",
                      started_ms=start, due_ms=start + RULE.duration_ms, escalate_to=ESCALATE)


def _filled(n: int) -> Clocks:
    clocks = Clocks({"TRIAGE_RED": RULE})
    for i in range(n):
        clocks.start(_state(i, T0 + i * 1_000))  # one a second: deadlines spread out
    return clocks


def bench_tick(n: int) -> None:
    print(f"tick, {n:,} open clocks", flush=True)
    clocks = _filled(n)
    idle = T0 + RULE.duration_ms - 1  # nothing due yet
    busy = T0 + RULE.duration_ms + 99 * 1_000  # the first 100 due
    for label, now, reps in (("nothing due", idle, 2_000), ("100 due", busy, 20)):
        heap_s = []
        plain_s = []
        for _ in range(3):  # interleaved, best of three
            t = time.perf_counter()
            for _ in range(reps):
                clocks.due(now)
                clocks.release()  # not applied: the next repetition finds them again
            heap_s.append((time.perf_counter() - t) / reps)
            t = time.perf_counter()
            for _ in range(max(1, reps // 100)):
                clocks.due_plainly(now)
            plain_s.append((time.perf_counter() - t) / max(1, reps // 100))
        h, p = min(heap_s), min(plain_s)
        slug = label.replace(" ", "_")
        figure(f"loop.tick.{slug}.heap_us", h * 1e6, "us", f"{label}: heap {h * 1e6:,.1f} us")
        figure(f"loop.tick.{slug}.plain_us", p * 1e6, "us",
               f"{label}: plain scan {p * 1e6:,.0f} us")
        figure(f"loop.tick.{slug}.ratio", p / h, "x", f"{label}: plain / heap = {p / h:,.0f}x")


def bench_memory(n: int) -> None:
    print(f"memory, {n:,} open clocks", flush=True)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    clocks = _filled(n)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per = (after - before) / n
    figure("loop.memory.bytes_per_clock", per, "B",
           f"{per:,.0f} bytes per open clock; {(after - before) / 1e6:,.0f} MB for {len(clocks):,}")


def bench_latency(count: int = 200, spread_s: float = 10.0) -> None:
    from broker.clock import SystemClock  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.config import load  # noqa: PLC0415
    from broker.kafka.admin import Admin  # noqa: PLC0415
    from broker.kafka.cluster import obtain_cluster  # noqa: PLC0415
    from broker.kafka.configuration import TopicSpec, loop_topic_specs  # noqa: PLC0415
    from broker.kafka.consumer import make_consumer  # noqa: PLC0415
    from broker.kafka.producer import make_producer  # noqa: PLC0415
    from broker.loop.core import CLOCK_RECORD, NOTICE  # noqa: PLC0415
    from broker.loop.rules import parse_clock_policy  # noqa: PLC0415
    from broker.loop.service import LoopService  # noqa: PLC0415
    from broker.topics import Topics  # noqa: PLC0415

    print(f"latency, {count} escalations over {spread_s:.0f} s", flush=True)
    codec = Codec.default()
    policy = parse_clock_policy({"rules": {"TRIAGE_RED": {"elapsed_hours": 0.001,
                                                          "stops_on": ["TRIAGE"]}}})
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
    with obtain_cluster(load()) as cluster:
        bootstrap = cluster.bootstrap
        with Admin(bootstrap) as admin:
            admin.ensure_topics(loop_topic_specs(topics, ["police"], ["mash", "mgr"])
                                + [TopicSpec(topics.quarantine, 1), TopicSpec(topics.audit, 1)])
        reader = make_consumer(bootstrap, group_id=None, topics=[topics.notices("mgr")])
        service = LoopService(bootstrap, topics=topics, codec=codec, policy=policy,
                              clock=SystemClock(), instance_id="bench")
        producer = make_producer(bootstrap)
        start = time.time_ns() // 1_000_000 + 3_000
        for i in range(count):
            due = start + int(i * spread_s * 1000 / count)
            record = {"clock_id": f"TRIAGE_RED:e{i}:mash", "kind": "TRIAGE_RED",
                      "event_id": f"e{i}", "subject": "ab" * 32, "owner": "mash",
                      "referrer": "police", "started_at": due - 3_600, "due_at": due,
                      "escalate_to": ["mgr"], "status": "OPEN", "tiers_escalated": 0,
                      "stopped_at": None, "stopped_by": None}
            producer.send(topics.clock_starts, codec.encode(record, CLOCK_RECORD),
                          key=f"e{i}".encode())
        producer.flush()
        producer.close()
        delays: list[float] = []
        deadline = time.monotonic() + spread_s + 60
        while len(delays) < count and time.monotonic() < deadline:
            service.run_once()
            for r in reader.poll_records(timeout_ms=0):
                notice = codec.decode(r.value or b"", NOTICE)
                delays.append(time.time_ns() / 1e6 - notice["due_at"].timestamp() * 1000)
        service.close()
        reader.close()
    if len(delays) < count:
        print(f"  only {len(delays)} of {count} escalations arrived", flush=True)
    if not delays:
        return
    delays.sort()
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    figure("loop.escalation_latency.p50_ms", p50, "ms",
           f"deadline -> notice read: p50 {p50:,.0f} ms")
    figure("loop.escalation_latency.p99_ms", p99, "ms",
           f"deadline -> notice read: p99 {p99:,.0f} ms (aim < 1,000 ms)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clocks", type=int, default=1_000_000)
    ap.add_argument("--only", default="tick,memory,latency")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if "tick" in only:
        bench_tick(args.clocks)
    if "memory" in only:
        bench_memory(args.clocks)
    if "latency" in only:
        bench_latency()


if __name__ == "__main__":
    main(sys.argv[1:])
