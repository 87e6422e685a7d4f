"""The pattern detector: recall of planted patterns, false alerts, latency, memory.

* quality: a generated month (bench/patterns_month.py, >= 50,000 events) through
  the detectors: recall of planted patterns (an alert of the same kind joining the
  planted children), false alerts per 10,000 events, detector throughput;
* memory: state held per 100,000 children (tracemalloc);
* turn: the detector's turn without Kafka (feed records decoded, detected, the
  changelog and alert records made), with and without identity notices (a
  person's link of two children) among them;
* latency: feed records written at 1,000 events/s to the detector's feed on the
  local broker, the service running; event -> alert committed on its ingest topic
  (overdue interviews left out: a deadline passing makes them, not the newest event).
  The router's own cost is bench_router's.

Each figure is printed for people and once more as ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.patterns_month import month  # noqa: E402
from broker.patterns.detectors import Detectors  # noqa: E402
from broker.patterns.observe import observations  # noqa: E402


def figure(name: str, value: float, unit: str, text: str) -> None:
    print(f"  {text}", flush=True)
    print("BENCH " + json.dumps({"name": name, "value": round(value, 3), "unit": unit}),
          flush=True)


def bench_quality(events: int) -> None:
    m = month(events)
    print(f"quality: {len(m.events):,} events in a month, {len(m.planted)} planted patterns",
          flush=True)
    d = Detectors()
    started = time.perf_counter()
    watermark = 0
    for e in m.events:
        added, _ = d.observe(observations(e))
        if added and (at := max(o.at_ms for o in added)) > watermark:
            watermark = at
            d.overdue(watermark)
    elapsed = time.perf_counter() - started
    alerts = list(d.alerts.values())
    found = 0
    for kind, children, _ in m.planted:
        if any(a.kind == kind and children <= set(a.children) for a in alerts):
            found += 1
    false = [a for a in alerts if not any(a.kind == k and set(a.children) & c
                                          for k, c, _ in m.planted)]
    figure("patterns.recall", found / len(m.planted), "ratio",
           f"recall of planted patterns: {found}/{len(m.planted)}")
    for kind in sorted({k for k, _, _ in m.planted}):
        of = [c for k, c, _ in m.planted if k == kind]
        hit = sum(1 for c in of if any(a.kind == kind and c <= set(a.children) for a in alerts))
        figure(f"patterns.recall.{kind.lower()}", hit / len(of), "ratio",
               f"  {kind}: {hit}/{len(of)}")
    per_10k = len(false) * 10_000 / len(m.events)
    figure("patterns.false_alerts_per_10k", per_10k, "alerts",
           f"false alerts: {len(false)} ({per_10k:.2f} per 10,000 events)")
    for kind in sorted({a.kind for a in false}):
        print(f"    of which {kind}: {sum(1 for a in false if a.kind == kind)}")
    figure("patterns.detect_events_per_s", len(m.events) / elapsed, "events/s",
           f"detectors alone: {len(m.events) / elapsed:,.0f} events/s")
    bench_links(d, m.events)


def bench_links(d: Detectors, events: list[dict[str, Any]], pairs: int = 200) -> None:
    """A person's link and its unlink applied to the month's whole state: each counts
    again every pattern the two children's observations are in (a scan of the state)."""
    import random  # noqa: PLC0415

    kids = sorted({e["subject"]["pseudonym"] for e in events})
    rng = random.Random(7)
    took: dict[str, list[float]] = {"link": [], "unlink": []}
    for i in range(pairs):
        a, b = rng.sample(kids, 2)
        for what, into in (("link", b), ("unlink", None)):
            started = time.perf_counter()
            d.relink(a, into, f"{what}-{i}")
            took[what].append((time.perf_counter() - started) * 1000)
    for what, ms in took.items():
        ms.sort()
        p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99) - 1]
        figure(f"patterns.{what}_ms_p99", p99, "ms",
               f"{what} of two children ({pairs}, {d.size():,} observations held): "
               f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def bench_memory(children: int = 100_000) -> None:
    m = month(children * 2, seed=3)
    events = m.events
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    d = Detectors()
    kids = set()
    for e in events:
        added, _ = d.observe(observations(e))
        if added:
            d.overdue(max(o.at_ms for o in added))
        kids.add(e["subject"]["pseudonym"])
        if len(kids) >= children:
            break
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per = used * 100_000 / len(kids) / 1e6
    figure("patterns.state_mb_per_100k_children", per, "MB",
           f"state: {per:,.0f} MB per 100,000 children ({d.size():,} observations)")


def bench_turn(events: int, links_per_10k: int = 10, rounds: int = 2) -> None:
    """The detector's turn without Kafka (PatternsCore: decode, detect, changelog and
    alert records; end_turn every 200 records) over a generated month of feed
    records: alternately without and with ``links_per_10k`` identity notices (a
    person linking two children already seen) per 10,000 events."""
    import random  # noqa: PLC0415

    from broker.codec import Codec  # noqa: PLC0415
    from broker.patterns.core import PatternsCore  # noqa: PLC0415

    codec = Codec.default()
    m = month(events, seed=11)
    records = _feed_records(codec, m)
    rng = random.Random(5)
    linked: list[bytes] = []
    seen: list[str] = []
    every = 10_000 // links_per_10k
    for i, (e, value) in enumerate(zip(m.events, records, strict=True)):
        linked.append(value)
        seen.append(e["subject"]["pseudonym"])
        if i % every == every - 1:
            a, b = rng.sample(seen, 2)
            linked.append(codec.encode({
                "notice_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "decision_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "subscriber": "safeshare-patterns", "action": "LINK", "pseudonym": b,
                "other_pseudonym": a, "record_key": b, "other_record_key": a,
                "decided_at": 0, "applied_at": 0}, "safeshare.IdentityNotice"))
    print(f"turn: {len(records):,} feed records, {len(linked) - len(records)} links "
          f"in the second stream", flush=True)
    for _ in range(rounds):
        for links, stream in ((0, records), (links_per_10k, linked)):
            core = PatternsCore(codec=codec, ingest_topic="ingest", state_topic="state",
                                thresholds=dict(Detectors().thresholds),
                                now_ms=lambda: 1 << 60)
            started = time.perf_counter()
            for i, value in enumerate(stream):
                core.on_feed(value)
                if i % 200 == 199:
                    core.end_turn()
            per_s = len(stream) / (time.perf_counter() - started)
            figure(f"patterns.turn_records_per_s.links_{links}", per_s, "records/s",
                   f"detector turn, {links} links per 10,000 events: {per_s:,.0f} records/s")


def _feed_records(codec: Any, m: Any) -> list[bytes]:
    """The month's events as the router writes them to the detector's feed."""
    from broker.patterns.core import AGENCY  # noqa: PLC0415

    decision = {"subscriber": AGENCY, "outcome": "SHARE", "rule_id": "bench",
                "reason_code": "NONE", "reason": "bench", "lawful_basis": "CONSENT",
                "purpose": "SAFEGUARDING", "data_classes_shared": [], "fields_redacted": [],
                "obligations": [], "policy_digest": "0" * 64, "decided_at": 0}
    return [codec.encode({"decision": _decision(codec, decision), "event": _full(e)},
                         "safeshare.FeedRecord") for e in m.events]


def bench_latency(events: int, rate: float) -> None:
    from broker.codec import Codec  # noqa: PLC0415
    from broker.config import load  # noqa: PLC0415
    from broker.kafka.admin import Admin  # noqa: PLC0415
    from broker.kafka.cluster import obtain_cluster  # noqa: PLC0415
    from broker.kafka.configuration import TopicSpec  # noqa: PLC0415
    from broker.kafka.consumer import make_consumer  # noqa: PLC0415
    from broker.kafka.producer import make_producer  # noqa: PLC0415
    from broker.patterns.core import AGENCY  # noqa: PLC0415
    from broker.patterns.service import PatternService, topic_specs  # noqa: PLC0415
    from broker.topics import Topics  # noqa: PLC0415

    codec = Codec.default()
    m = month(events, seed=9, start_ms=time.time_ns() // 1_000_000 - 31 * 86_400_000)
    records = _feed_records(codec, m)
    print(f"latency: {len(records):,} feed records at {rate:,.0f} events/s", flush=True)
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
    with obtain_cluster(load()) as cluster:
        bootstrap = cluster.bootstrap
        with Admin(bootstrap) as admin:
            admin.ensure_topics([TopicSpec(topics.feed(AGENCY), 3),
                                 TopicSpec(topics.ingest(AGENCY), 3), *topic_specs(topics)])
        service = PatternService(bootstrap, topics=topics, codec=codec,
                                 thresholds=dict(Detectors().thresholds), instance_id="bench")
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                service.run_once(wait_ms=50)

        sent: dict[str, float] = {}
        worker = threading.Thread(target=serve, daemon=True)
        worker.start()
        while service.health()[1]["partitions"] == []:
            time.sleep(0.1)
        reader = make_consumer(bootstrap, group_id=None, topics=[topics.ingest(AGENCY)])
        reader.poll_records(timeout_ms=500)
        producer = make_producer(bootstrap, linger_ms=1)
        delays: list[float] = []
        start = time.monotonic()
        for i, (e, value) in enumerate(zip(m.events, records, strict=True)):
            due = start + i / rate
            while (now := time.monotonic()) < due:
                time.sleep(min(0.002, due - now))
            sent[e["event_id"]] = time.monotonic()
            producer.send(topics.feed(AGENCY), value, key=e["subject"]["pseudonym"].encode())
            if i % 200 == 0:
                delays += _arrived(reader, codec, sent)
        producer.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and service.stats.records < len(records):
            delays += _arrived(reader, codec, sent)
        for _ in range(5):
            delays += _arrived(reader, codec, sent)
        stop.set()
        worker.join(10)
        service.close()
        reader.close()
        producer.close()
    if not delays:
        print("  no alert arrived")
        return
    delays.sort()
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    figure("patterns.alert_latency.p50_ms", p50, "ms",
           f"event -> alert committed: p50 {p50:,.0f} ms ({len(delays)} alert versions)")
    figure("patterns.alert_latency.p99_ms", p99, "ms",
           f"event -> alert committed: p99 {p99:,.0f} ms (aim < 1,000 ms)")


def _arrived(
    reader: Any, codec: Any, sent: dict[str, float], *, timeout_ms: int = 100
) -> list[float]:
    """Milliseconds from the newest evidence event ``sent`` to each alert read now."""
    out = []
    for r in reader.poll_records(timeout_ms=timeout_ms):
        now = time.monotonic()
        alert = codec.decode(r.value or b"", "safeshare.ConcernEvent")["payload"][1]
        if alert["kind"].startswith("OVERDUE"):
            continue  # made by event time passing a deadline, not by the newest event
        times = [sent[x] for x in alert["evidence"] if x in sent]
        if times:
            out.append((now - max(times)) * 1000)
    return out


def _decision(codec: Any, template: dict[str, Any]) -> dict[str, Any]:
    schema = codec.raw_schemas()["safeshare.Decision"]
    return {f["name"]: template.get(f["name"], f.get("default")) for f in schema["fields"]}


def _full(e: dict[str, Any]) -> dict[str, Any]:
    """A generated event as the feed carries it (every envelope field present)."""
    return {**e, "reported_at": e["occurred_at"],
            "source": {"agency_id": "devon-cornwall-police", "agency_type": "POLICE",
                       "system": None},
            "reporter": {"role": "officer", "name": None, "organisation": None, "contact": None},
            "subject": {"pseudonym": e["subject"]["pseudonym"],
                        "local_authority": "E06000027"},
            "risk_level": e.get("risk_level", "MEDIUM"),
            "sharing": {"no_consent_reason": None, "justification": None, "break_glass": False},
            "signature": None}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--latency-events", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=1_000.0)
    ap.add_argument("--only", default="quality,memory,turn,latency")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if "quality" in only:
        bench_quality(args.events)
    if "memory" in only:
        bench_memory()
    if "turn" in only:
        bench_turn(args.events)
    if "latency" in only:
        bench_latency(args.latency_events, args.rate)


if __name__ == "__main__":
    main(sys.argv[1:])
