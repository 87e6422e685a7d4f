"""Fuzz the router's decoder and envelope checks: ``python -m fuzz [N]`` (default 100,000).

Inputs: the hostile corpus, then random mutations (bit flips, cuts, splices,
insertions, random bytes) of valid example events. Every input must come out
as exactly one of: quarantined with a reason, a duplicate, or routed — and a
routed one must be a valid event from an agency on its own topic. No input may
raise, hang (each is timed) or put anything but a FeedRecord on a feed.
Prints the counts; exits non-zero on the first violation.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import sys
import time
from pathlib import Path

from broker.clock import FixedClock
from broker.codec import Codec
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, RoutingCore
from broker.topics import Topics
from fuzz.corpus import POLICE, hostile_corpus, replayed

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
SLOW_S = 1.0


def main(argv: list[str]) -> int:
    logging.disable(logging.WARNING)  # one quarantine warning per input is noise here
    n = int(argv[0]) if argv else 100_000
    rng = random.Random(int(argv[1]) if len(argv) > 1 else 20261126)
    codec = Codec.default()
    topics = Topics("fuzz")
    core = RoutingCore(
        codec=codec,
        decider=Policy.load(POLICY, field_classes=codec.data_classes()),
        consents=ConsentStore(),
        topics=topics,
        clock=FixedClock(1_795_000_000_000),
        pseudonym_key=b"f" * 32,
    )
    counts: collections.Counter[str] = collections.Counter()
    seeds = [replayed(codec) for _ in range(8)]
    corpus = hostile_corpus(codec)

    def run(name: str, agency: str, data: bytes) -> None:
        started = time.perf_counter()
        routed = core.handle(Inbound(topics.ingest(agency), 0, 0, None, data))
        took = time.perf_counter() - started
        if took > SLOW_S:
            raise SystemExit(f"{name}: took {took:.2f} s")
        for out in routed.outputs:
            if out.topic.startswith(topics.feed_prefix):
                record = codec.decode(out.value, "safeshare.FeedRecord")
                if routed.quarantined or routed.duplicate:
                    raise SystemExit(f"{name}: quarantined/duplicate input reached a feed")
                assert record["event"]["source"]["agency_id"] == agency
        if routed.quarantined:
            counts[f"quarantined {routed.quarantined}"] += 1
            assert [json.loads(lf)["kind"] for lf in routed.leaves] == ["QUARANTINED"], name
        elif routed.duplicate:
            counts["duplicate"] += 1
        else:
            counts["routed"] += 1
            assert routed.leaves, name

    for name, agency, data in corpus:
        run(name, agency, data)
    corpus_counts = dict(counts)
    # A replay of a routed event is a duplicate.
    run("replay-1", POLICE, seeds[0])
    run("replay-2", POLICE, seeds[0])
    started = time.perf_counter()
    for i in range(n):
        data = bytearray(rng.choice(seeds))
        op = rng.randrange(6)
        if op == 0:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[rng.randrange(len(data)) :]
        elif op == 2:
            pos = rng.randrange(len(data))
            data[pos:pos] = rng.randbytes(rng.randint(1, 64))
        elif op == 3:
            other = rng.choice(seeds)
            cut = rng.randrange(len(data))
            data = data[:cut] + other[rng.randrange(len(other)) :]
        elif op == 4:
            data = bytearray(b"\xc3\x01" + bytes(data[2:10]) + rng.randbytes(rng.randint(0, 600)))
        else:
            data[rng.randrange(10, len(data))] = rng.randrange(256)
        run(f"mutation {i}", POLICE, bytes(data))
    took = time.perf_counter() - started
    print(f"hostile corpus: {len(corpus)} messages -> {corpus_counts}")
    print(f"fuzzing: {n} mutated inputs in {took:.1f} s ({n / took:,.0f}/s); no crash, no hang")
    for key, value in sorted(counts.items()):
        print(f"  {key:<32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
