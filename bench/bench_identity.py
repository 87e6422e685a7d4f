"""Linkage quality and speed on a generated population (issue 13).

``python -m bench identity [--children N] [--seed S]``: generates N children
(default 10,000; bench/identity_population.py; seed 13, another seed is another
population, to check that a figure is not an accident of one) and their events, and feeds the events
in publication order to the identity index as the router does: an event is
LINKed to a known child, starts a NEW one, or goes to REVIEW. Prints:

- precision of automatic links (the child linked to is the event's own child),
- recall of automatic links (of events whose child was already known, the
  share linked to it automatically), overall and for events without the NHS
  number,
- the review rate (events sent to the MASH for a person to decide),
- twins auto-linked to each other (must be 0),
- linkage latency per event, p50 and p99.

Aims (issue 13): precision >= 0.999, recall >= 0.95, review < 5%, p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections import Counter

from bench.identity_population import Event, population
from broker.identity.linkage import LINK, REVIEW, Features, Index, Model, Thresholds


def features(e: Event) -> Features:
    return Features.of(given=e.given, family=e.family, dob=e.dob, postcode=e.postcode,
                       nhs=e.nhs, upn=e.upn)


def run(n_children: int, thresholds: Thresholds, seed: int = 13) -> dict[str, float]:
    children, events = population(n_children, seed=seed)
    twins = Counter((c.family, c.dob, c.postcode) for c in children)
    index = Index(Model.default(), thresholds)
    owner: dict[str, int] = {}  # pseudonym -> the child whose record started it
    known: set[int] = set()
    outcome: Counter[str] = Counter()
    latency: list[float] = []
    twin_links = 0
    for e in events:
        f = features(e)
        started = time.perf_counter()
        m = index.match(f)
        latency.append((time.perf_counter() - started) * 1000)
        should_link = e.child in known
        no_nhs = "" if e.nhs else "_no_nhs"
        if m.decision == LINK:
            assert m.pseudonym is not None
            right = owner[m.pseudonym] == e.child
            outcome["link_right" if right else "link_wrong"] += 1
            if should_link:
                outcome[("tp" if right else "fn") + no_nhs] += 1
            if not right:
                a, b = children[owner[m.pseudonym]], children[e.child]
                if (a.family, a.dob, a.postcode) == (b.family, b.dob, b.postcode):
                    twin_links += 1
            index.add(m.pseudonym, f, m.probability)
        else:
            outcome["review" if m.decision == REVIEW else "new"] += 1
            if should_link:
                outcome["fn" + no_nhs] += 1
            # NEW, and REVIEW until a person decides: a provisional pseudonym of its own.
            pseudonym = str(uuid.uuid4())
            owner[pseudonym] = e.child
            index.add(pseudonym, f)
        known.add(e.child)
    links = outcome["link_right"] + outcome["link_wrong"]
    latency.sort()
    return {
        "children": len(children),
        "twin_pairs": sum(1 for v in twins.values() if v > 1),
        "events": len(events),
        "precision": outcome["link_right"] / links if links else 1.0,
        "recall": (outcome["tp"] + outcome["tp_no_nhs"])
        / max(1, outcome["tp"] + outcome["tp_no_nhs"] + outcome["fn"] + outcome["fn_no_nhs"]),
        "recall_no_nhs": outcome["tp_no_nhs"] / max(1, outcome["tp_no_nhs"] + outcome["fn_no_nhs"]),
        "review_rate": outcome["review"] / len(events),
        "wrong_links": outcome["link_wrong"],
        "twins_auto_linked": twin_links,
        "latency_p50_ms": statistics.median(latency),
        "latency_p99_ms": latency[int(len(latency) * 0.99)],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench identity")
    ap.add_argument("--children", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13,
                    help="the generated population's seed (another seed, another population)")
    ap.add_argument("--upper", type=float, default=Thresholds().upper)
    ap.add_argument("--lower", type=float, default=Thresholds().lower)
    args = ap.parse_args(argv)
    r = run(args.children, Thresholds(upper=args.upper, lower=args.lower), seed=args.seed)
    print(f"{r['children']} children ({r['twin_pairs']} twin pairs), {r['events']} events "
          f"(seed {args.seed}); "
          f"thresholds upper {args.upper} lower {args.lower}")
    print(f"  automatic links: precision {r['precision']:.4f} ({r['wrong_links']} wrong, "
          f"{r['twins_auto_linked']} between twins), recall {r['recall']:.4f} "
          f"(events without NHS number: {r['recall_no_nhs']:.4f})")
    print(f"  sent to review: {r['review_rate']:.2%} of events")
    print(f"  linkage per event: p50 {r['latency_p50_ms']:.3f} ms, "
          f"p99 {r['latency_p99_ms']:.3f} ms")
    for figure in ("precision", "recall", "recall_no_nhs", "review_rate", "twins_auto_linked",
                   "latency_p50_ms", "latency_p99_ms"):
        print("BENCH " + json.dumps({"bench": "identity", "figure": figure,
                                     "value": round(r[figure], 6), "children": r["children"],
                                     "seed": args.seed, "upper": args.upper, "lower": args.lower}))


if __name__ == "__main__":
    main()
