"""One router crash-looping: how long the other routers' partitions stand still.

``python -m bench crashloop [--routers 2] [--kills 6] [--rate 50] [--code-root DIR]
[--own-broker]``: ``safeshare serve`` routers in one group under a steady
stream; ``r0`` is SIGKILLed soon after each incarnation first commits and
restarted at once. Prints the longest
standstill (a partition with records to route whose committed offset does not
move) of the partitions the other routers owned, the victim's own, and checks
exactly once at the end. ``--code-root`` runs the routers from another checkout
(e.g. the commit before a change, for a before/after figure). Harness:
tests/crashloop.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path


def figure(name: str, value: float, unit: str, text: str) -> None:
    print(f"  {text}", flush=True)
    print("BENCH " + json.dumps({"name": name, "value": round(value, 3), "unit": unit}),
          flush=True)


def main(argv: list[str] | None = None) -> None:
    from broker import config  # noqa: PLC0415
    from broker.config import PROJECT_ROOT  # noqa: PLC0415
    from broker.kafka.local import THROWAWAY_JVM_OPTS, LocalKafka  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routers", type=int, default=2)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--code-root", type=Path, default=PROJECT_ROOT)
    ap.add_argument("--own-broker", action="store_true",
                    help="a throwaway broker of its own (not the shared one and its churn)")
    args = ap.parse_args(argv)

    home = tempfile.mkdtemp(prefix="crashloop-")  # kept: the routers' log is routers.log
    broker = None
    if args.own_broker:
        broker = LocalKafka(config.load().home, instance_dir=Path(home) / "kafka",
                            jvm_opts=THROWAWAY_JVM_OPTS)
        broker.start()
    try:
        run(args, home, broker.bootstrap if broker is not None else None)
    finally:
        if broker is not None:
            broker.wipe()


def run(args: argparse.Namespace, home: str, bootstrap: str | None) -> None:
    from broker import config  # noqa: PLC0415
    from broker.kafka.admin import Admin  # noqa: PLC0415
    from broker.kafka.cluster import obtain_cluster  # noqa: PLC0415
    from broker.topics import Topics  # noqa: PLC0415
    from tests.crashloop import crash_loop  # noqa: PLC0415
    from tests.helpers import create_topics  # noqa: PLC0415
    from tests.router_load import Load, check_exactly_once  # noqa: PLC0415

    with obtain_cluster(config.load()) as cluster:
        bootstrap = bootstrap or cluster.bootstrap
        topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
        s = replace(config.load(), namespace=topics.namespace, home=Path(home) / "home")
        s.home.mkdir()
        with Admin(bootstrap) as admin:
            policy = create_topics(admin, s)
        load = Load(bootstrap, topics, rate=args.rate, seed=args.seed)
        print(f"{args.routers} routers from {args.code_root}, r0 killed {args.kills} times, "
              f"{args.rate:.0f} events/s, seed {args.seed}; log {home}/routers.log", flush=True)
        res = crash_loop(bootstrap, s, policy, load, routers=args.routers,
                         kills=args.kills, seed=args.seed, code_root=args.code_root)
        states = [st for _, st in res.watch.states]
        figure("crashloop.others_longest_standstill_s", res.others_longest_s, "s",
               f"other routers' partitions: longest standstill {res.others_longest_s:.1f} s, "
               f"{res.others_standstills_over_1s} standstills over 1 s "
               f"({res.seconds:.0f} s, {res.kills} kills)")
        figure("crashloop.victim_longest_standstill_s", res.victim_longest_s, "s",
               f"the crash-looping router's partitions: longest standstill "
               f"{res.victim_longest_s:.1f} s")
        figure("crashloop.rebalances", states.count("PreparingRebalance"), "count",
               f"group states seen: {' > '.join(states)}")
        print(f"  timeline (s): {res.timeline()}", flush=True)
        n = check_exactly_once(bootstrap, s, policy, load)
        print(f"  exactly once: {len(load.events)} events, {n} audit leaves", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
