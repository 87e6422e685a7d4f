"""Policy decision rate on the example MASH policy (10 subscribers), against a baseline.

Plain script: prints figures, passes or fails nothing. Run::

    .venv/bin/python bench/bench_policy.py [--seconds 2]

Figures (single thread, so "per core"):

- ``policy_decisions_per_s``: decisions per second through ``decide_all`` (one
  decision per subscriber per event), over the example events with a consent
  store of 10 000 children;
- ``policy_decide_median_us``: median time of one ``decide(event, subscriber)``
  call, in microseconds (the plain path; includes reading the event's facts
  each call);
- ``policy_event_us`` and ``policy_event_plain_us``: microseconds per event
  (all subscribers) through ``decide_all`` (the router's path, from remembered
  plans) and through ``decide_all_plainly`` (the same decisions by the plain
  path, the reference), measured in alternation so that the machine's load
  weighs on both alike; best round of each;
- ``policy_plain_vs_decide_all``: the median over rounds of plain time /
  ``decide_all`` time (how many times fewer microseconds the router's path takes);
- ``policy_present_us`` and ``policy_present_walk_us``: microseconds per event
  finding the fields that hold a value, by the code generated from the field
  paths (``decide_all``'s) and by the plain walk, in alternation; best round;
- ``policy_consent_lookup_us`` and ``policy_consent_lookup_plainly_us``:
  microseconds per ``ConsentStore.lookup`` (states built when the record was
  put) and per ``lookup_plainly`` (a state built per call, the reference),
  over the example children and a few store children (GIVEN, REFUSED,
  WITHDRAWN, expired, no record), in alternation; best round;
- ``baseline_copies_per_s``: the same loop doing nothing but a shallow
  ``dict(event)`` per subscriber, the floor any per-subscriber work stands on;
- ``policy_vs_baseline``: how many times slower a decision is than that copy.

Each figure is also printed as one line ``BENCH {"name": ..., "value": ..., "unit": ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from broker.codec import Codec  # noqa: E402
from broker.policy import ConsentRecord, ConsentStore, Policy  # noqa: E402
from broker.policy._present import fields_present as _present  # noqa: E402

NOW = 1_731_196_800_000  # 2024-11-10T00:00:00Z


def bench(line: str, name: str, value: float, unit: str) -> None:
    print(f"{line:<44} {value:>14,.2f} {unit}")
    print("BENCH " + json.dumps({"name": name, "value": round(value, 3), "unit": unit}))


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per second of ``fn`` (which returns how many items it did), best of 3 runs."""
    best = 0.0
    for _ in range(3):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            done += fn()
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, done / (now - start))
    return best


def paired(
    a: Callable[[], int], b: Callable[[], int], seconds: float
) -> tuple[list[float], list[float]]:
    """Microseconds per item of ``a`` and of ``b``, run in alternation, one figure per round.

    On a shared machine the load changes from one second to the next; taking
    the two in turn, round after round, lets a ratio of paired rounds compare
    like with like.
    """
    times_a: list[float] = []
    times_b: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times_a) < 5:
        for fn, out in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            done = fn()
            out.append((time.perf_counter() - start) / done * 1e6)
    return times_a, times_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    codec = Codec.default()
    policy = Policy.load(ROOT / "deploy" / "policy" / "example-mash.yaml")
    events: list[dict[str, Any]] = []
    for path in sorted((ROOT / "tests" / "data" / "events").glob("*.json")):
        event = codec.from_json(json.loads(path.read_text(encoding="utf-8")))
        if event["category"] != "CONSENT":
            events.append(event)
    store = ConsentStore()
    for i in range(10_000):
        status = ("GIVEN", "REFUSED", "WITHDRAWN")[i % 3]
        store.put(
            ConsentRecord(f"c{i}", f"psn-{i:06d}", "SAFEGUARDING", status, expires_at_ms=NOW + i)
        )
    # the example events' children: one with consent given, one refused
    store.put(ConsentRecord("c-a", "psn-7Q2K-93XD", "SAFEGUARDING", "GIVEN"))
    store.put(ConsentRecord("c-b", "psn-4H8M-21PL", "SAFEGUARDING", "REFUSED"))
    subscribers = [s.id for s in policy.subscribers]
    n_subs = len(subscribers)

    def run_policy() -> int:
        for event in events:
            policy.decide_all(event, store, NOW)
        return len(events) * n_subs

    def run_plain() -> int:
        for event in events:
            policy.decide_all_plainly(event, store, NOW)
        return len(events) * n_subs

    def run_baseline() -> int:
        for event in events:
            for _ in subscribers:
                dict(event)
        return len(events) * n_subs

    samples: list[int] = []
    for _ in range(200):
        for event in events:
            for sid in subscribers:
                t0 = time.perf_counter_ns()
                policy.decide(event, sid, store, NOW)
                samples.append(time.perf_counter_ns() - t0)

    def run_walk() -> int:
        for event in events:
            _present(event, policy._root)
        return len(events)

    def run_generated() -> int:
        for event in events:
            policy._present_compiled(event)
        return len(events)

    asks = [
        (subject, "SAFEGUARDING", role, NOW + 1)
        # the example children (GIVEN, REFUSED); store children expired, WITHDRAWN,
        # REFUSED at NOW + 1; a child with no record
        for subject in (
            "psn-7Q2K-93XD",
            "psn-4H8M-21PL",
            "psn-000000",
            "psn-000002",
            "psn-000004",
            "nobody",
        )
        for role in ("mash_team", "police")
    ]

    def lookups_of(lookup: Callable[[str, str, str, int], object]) -> Callable[[], int]:
        def run() -> int:
            for _ in range(200):
                for ask in asks:
                    lookup(*ask)
            return 200 * len(asks)

        return run

    plain_us, fast_us = paired(run_plain, run_policy, args.seconds)
    lookup_plain_us, lookup_us = paired(
        lookups_of(store.lookup_plainly), lookups_of(store.lookup), args.seconds / 3
    )
    walk_us, generated_us = paired(run_walk, run_generated, args.seconds / 3)
    decisions = rate(run_policy, args.seconds)
    copies = rate(run_baseline, args.seconds)
    print(
        f"policy {policy.digest[:12]}: {n_subs} subscribers, {len(policy.rules)} rules,"
        f" {len(events)} example events, {len(store)} consent records"
    )
    bench("decisions per second per core (decide_all)", "policy_decisions_per_s", decisions, "1/s")
    bench(
        "median time of one decide()",
        "policy_decide_median_us",
        statistics.median(samples) / 1000,
        "us",
    )
    bench("baseline dict copies per second per core", "baseline_copies_per_s", copies, "1/s")
    bench("policy cost / baseline cost", "policy_vs_baseline", copies / decisions, "x")
    bench(
        "events per second per core (all subscribers)",
        "policy_events_per_s",
        decisions / n_subs,
        "1/s",
    )
    bench("us per event, decide_all", "policy_event_us", min(fast_us) * n_subs, "us")
    bench("us per event, plain path", "policy_event_plain_us", min(plain_us) * n_subs, "us")
    bench(
        "plain path / decide_all (median of rounds)",
        "policy_plain_vs_decide_all",
        statistics.median(p / f for p, f in zip(plain_us, fast_us, strict=True)),
        "x",
    )
    bench("us per consent lookup", "policy_consent_lookup_us", min(lookup_us), "us")
    bench(
        "us per consent lookup, plainly",
        "policy_consent_lookup_plainly_us",
        min(lookup_plain_us),
        "us",
    )
    bench("us per event, fields present (generated)", "policy_present_us", min(generated_us), "us")
    bench("us per event, fields present (walk)", "policy_present_walk_us", min(walk_us), "us")


if __name__ == "__main__":
    main()
