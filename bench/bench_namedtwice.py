"""One child named twice by two router instances, and the review items that pair them.

``python -m bench namedtwice [--children N] [--seed S] [--lag L]``: the generated
population's events (bench/identity_population.py, as ``bench identity``) routed
by two instances, each event to one of them at random (its partition), each
instance learning the other's index entries ``L`` events late (a fetch later:
at 1,000 events/s a few ms is a few events). Prints how many children an
instance named again while the other's pseudonym for them was not yet learned
(named twice), how many of those children a review item then paired (both
pseudonyms the same child's), how many pairs were raised (each is one item at
the desk, whichever instances raised it) and how many paired two children (a
person's time), and what learning another
instance's new child costs (scored, p50 / p99) against learning it unscored.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path

from bench.identity_population import Event, population
from broker.identity.linkage import Thresholds
from broker.routing.identity import SubjectIdentity


def _subject(e: Event) -> dict[str, object]:
    return {"given_name": e.given, "family_name": e.family, "date_of_birth": e.dob,
            "postcode": e.postcode, "nhs_number": e.nhs, "upn": e.upn}


def run(n_children: int, seed: int, lag: int) -> dict[str, float]:
    _, events = population(n_children, seed=seed)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as keys:  # one partnership key, two instances
        routers = [SubjectIdentity.from_keys_dir(Path(keys), Thresholds(), create=True),
                   SubjectIdentity.from_keys_dir(Path(keys), Thresholds())]
    owner: dict[str, int] = {}  # pseudonym -> the child whose event started it
    named_by: list[dict[int, str]] = [{}, {}]  # child -> a pseudonym each instance named
    pending: deque[tuple[int, int, bytes, bytes | None]] = deque()  # (due, to, key, value)
    twice: set[int] = set()
    right: set[int] = set()
    pairs: set[tuple[str, str]] = set()
    wrong: set[tuple[str, str]] = set()
    scored: list[float] = []
    for i, e in enumerate(events):
        while pending and pending[0][0] <= i:
            _, to, key, value = pending.popleft()
            new = value is not None and not routers[to].knows(key.decode())
            started = time.perf_counter()
            routers[to].learn(key, value, live=True)
            if new:  # scored against the learner's children
                scored.append((time.perf_counter() - started) * 1000)
        at = rng.randrange(2)
        me = routers[at]
        me.begin()  # one transaction per event
        for pair in me.take_pairs():
            pairs.add(pair.children)
            a, b = owner[pair.candidate], owner[pair.provisional]
            if a == b:
                right.add(a)
            else:
                wrong.add(pair.children)
        r = me.resolve(_subject(e), origin={"event_id": str(uuid.uuid4()), "agency": e.agency,
                                            "local_authority": ""})
        if r.decision != "LINK":
            owner[r.pseudonym] = e.child
            other = named_by[1 - at].get(e.child)
            if other is not None and not me.knows(other):
                twice.add(e.child)
            named_by[at].setdefault(e.child, r.pseudonym)
        key, value = r.index_record
        pending.append((i + lag, 1 - at, key, value))
    scored.sort()
    return {
        "events": len(events), "named_twice": len(twice), "paired_right": len(twice & right),
        "raised": len(pairs), "wrong_pairs": len(wrong),
        "learn_p50_ms": statistics.median(scored) if scored else 0.0,
        "learn_p99_ms": scored[int(len(scored) * 0.99)] if scored else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench namedtwice")
    ap.add_argument("--children", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--lag", type=int, default=20,
                    help="events before an instance learns the other's index entries")
    args = ap.parse_args(argv)
    r = run(args.children, args.seed, args.lag)
    print(f"{r['events']} events (seed {args.seed}), two router instances, lag {args.lag}")
    print(f"  children named twice: {r['named_twice']}, paired by a review item:"
          f" {r['paired_right']}; review items raised: {r['raised']}"
          f" ({r['wrong_pairs']} pairing two children)")
    print(f"  learning another instance's new child (scored): p50 {r['learn_p50_ms']:.3f} ms,"
          f" p99 {r['learn_p99_ms']:.3f} ms")
    for figure, value in r.items():
        print("BENCH " + json.dumps({"bench": "namedtwice", "figure": figure, "value": value,
                                     "seed": args.seed, "lag": args.lag}))


if __name__ == "__main__":
    main()
