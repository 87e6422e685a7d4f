"""Router figures on a real broker. Prints figures; never passes or fails.

    .venv/bin/python -m bench router
    .venv/bin/python bench/bench_router.py [--events N] [--throughput-events N] [--latency-s S]
                                          [--rate R] [--profile] [--only PHASES]

The cluster comes from ``broker.kafka.cluster.obtain_cluster`` ($SAFESHARE_BOOTSTRAP,
else testcontainers, else the project's local Kafka); each phase uses a fresh
topic namespace, deleted afterwards. Events are the examples in
``tests/data/events`` (six kinds, several variants each, padded to about 1 KB
with safeguarding-like filler text) routed by a policy cut down from
``deploy/policy/example-mash.yaml`` to three subscribers (the Torbay MASH,
children's social care and health safeguarding), so most events fan out to three
feeds. Event ids are unique (the router drops repeated ids).

Phases (``--only``, comma-separated, default all):

``core``        in memory, no Kafka: CPU per event of the routing core (decode,
                decide, redact and encode every copy, build the audit leaves),
                with ``--profile`` the top of a cProfile;
``send``        one transactional producer sending 1 KB copies to three feeds:
                kafka-python's ``KafkaProducer.send``, our ``Producer.send``
                and the router's ``Producer.send_all`` taking turns, CPU and
                wall time per record;
``throughput``  N events preloaded to the ingest topics, then routed: the router
                (in this process, transactional, with audit) against a bare
                kafka-python passthrough (consume one, produce three copies with
                ``KafkaProducer.send``, no decoding, policy or audit),
                non-transactional (at-least-once: flush, then commit offsets) and
                transactional (offsets in the transaction), on the same input and
                broker; and the transactional passthrough once more on the
                router's own send path (``Producer.send_all``), whose ratio is the
                cost of the routing work alone.
                Rates are from the first to the last commit (group joins excluded);
                three rounds on fresh topics, the ratio taken within each round and
                the median reported (the VM's speed drifts between runs);
``latency``     the router as a process (``safeshare route``) fed a steady rate
                (``--rates``, default 1,000 and 250 events/s): from an event's
                ``reported_at`` (set when it is sent) to the moment a
                ``read_committed`` reader of the MASH feed has it; p50/p99/max
                after a 5 s warm-up. A rate above the router's throughput makes
                a backlog, and the latency grows with the run;
``cycle``       the router in this process at a steady 1,000 events/s: how long each
                step of its loop takes per transaction (poll, catch-ups, lag,
                route + send, flush + commit) -- what the latency is made of --
                and when each Kafka request of a transaction is sent and answered;
``rss``         the router as a process routing ``--events`` events
                (SAFESHARE_BENCH_EVENTS, default 100,000; the issue's target is a
                million) preloaded: its resident set size as it goes.

Each figure is printed for people and once more as a machine-readable line::

    BENCH {"name": "...", "value": ..., "unit": "..."}
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router_load import SUBSCRIBERS, bench_policy, templates  # noqa: E402
from bench.router_rate import phase_core, phase_rss, phase_send, phase_throughput  # noqa: E402
from bench.router_time import (  # noqa: E402
    phase_cycle,
    phase_latency,
    phase_metadata,
    phase_txn,
)
from broker import config  # noqa: E402
from broker.codec import Codec  # noqa: E402
from broker.kafka.producer import TXN_RETRY_BACKOFF_MS  # noqa: E402
from broker.topics import Topics  # noqa: E402


def cluster_topics(bootstrap: str) -> int:
    """How many topics the cluster holds: what a regex subscription's metadata costs."""
    from broker.kafka.admin import Admin  # noqa: PLC0415

    with Admin(bootstrap) as admin:
        return len(admin.list_topics())


def main(argv: Sequence[str] | None = None) -> None:
    """Every figure. ``argv`` defaults to none (``python -m bench`` calls ``main()``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int,
                    default=int(os.environ.get("SAFESHARE_BENCH_EVENTS") or 100_000))
    ap.add_argument("--throughput-events", type=int, default=20_000)
    ap.add_argument(
        "--max-batch", default=str(config.DEFAULT_ROUTER_MAX_BATCH),
        help="the throughput phase's router: most events a transaction, comma-separated to "
        "compare (rounds go to each in turn; the first is reported in full)",
    )
    ap.add_argument("--latency-s", type=float, default=20.0)
    ap.add_argument(
        "--rates", default="1000,250",
        help="steady input rates (events/s) for the latency phase, comma-separated",
    )
    ap.add_argument(
        "--txn-retry-ms", default=f"{TXN_RETRY_BACKOFF_MS:g}",
        help="the router's first pause before a transactional retry (ms), comma-separated "
        "to compare (100: kafka-python's own behaviour)",
    )
    ap.add_argument(
        "--sources", default="name",
        help="how the latency phase's router subscribes, comma-separated and alternated "
        "to compare: name (the policy's topics, as shipped), regex (its pattern)",
    )
    ap.add_argument(
        "--transactions", default="v2",
        help="the latency phase's transaction protocol, comma-separated and alternated to "
        "compare: v2 (KIP-890, as shipped when the cluster has it), v1 (kafka-python's own)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="latency rounds per setting")
    ap.add_argument("--routers", default="1",
                    help="router processes (one group) in the latency phase, comma-separated")
    ap.add_argument("--profile", action="store_true", help="cProfile the routing core")
    ap.add_argument("--only", default="core,send,throughput,metadata,latency,cycle,rss")
    args = ap.parse_args(list(argv or ()))
    phases = set(args.only.split(","))

    codec = Codec.default()
    base = config.load()
    with tempfile.TemporaryDirectory(prefix="bench-router-policy-") as tmp:
        policy = bench_policy(codec, Path(tmp))
        tmpls = templates(codec, Topics("bench"))
        sizes = [len(t.make(str(uuid.uuid4()), 1_800_000_000_000)) for t in tmpls]
        print(f"{len(tmpls)} event variants of {min(sizes)}-{max(sizes)} bytes; "
              f"subscribers {', '.join(SUBSCRIBERS)}")
        if "core" in phases:
            with tempfile.TemporaryDirectory() as home:
                phase_core(tmpls, replace(base, home=Path(home), policy_path=policy), args.profile)
        if not phases & {"txn", "send", "throughput", "metadata", "latency", "rss", "cycle"}:
            return
        from broker.kafka.cluster import obtain_cluster  # noqa: PLC0415

        with obtain_cluster(base) as cluster:
            print(f"Kafka: {cluster.description}")
            if "txn" in phases:
                phase_txn(cluster.bootstrap, base, policy, tmpls,
                          [float(p) for p in args.txn_retry_ms.split(",")])
            if "send" in phases:
                phase_send(cluster.bootstrap, base, policy, tmpls)
            if "throughput" in phases:
                phase_throughput(cluster.bootstrap, base, policy, args.throughput_events, tmpls,
                                 max_batches=[int(b) for b in args.max_batch.split(",")])
            if "metadata" in phases:
                phase_metadata(cluster.bootstrap, base, policy)
            if "latency" in phases:
                print(f"the cluster holds {cluster_topics(cluster.bootstrap):,} topics")
                for rate in (float(r) for r in args.rates.split(",")):
                    for _ in range(args.rounds):
                        for pause in (float(p) for p in args.txn_retry_ms.split(",")):
                            for how in args.sources.split(","):
                                for n in (int(r) for r in args.routers.split(",")):
                                    for txn in args.transactions.split(","):
                                        phase_latency(
                                            cluster.bootstrap, base, policy, tmpls, rate,
                                            args.latency_s, txn_retry_ms=pause, sources=how,
                                            routers=n, transactions=txn,
                                        )
            if "cycle" in phases:
                phase_cycle(cluster.bootstrap, base, policy, tmpls, 1000.0, args.latency_s)
            if "rss" in phases:
                phase_rss(cluster.bootstrap, base, policy, tmpls, args.events)


if __name__ == "__main__":
    main(sys.argv[1:])
