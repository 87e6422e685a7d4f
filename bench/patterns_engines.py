"""The pattern detector under two exactly-once state engines, as a process of its own.

``own``: :class:`broker.patterns.service.PatternService` (one Kafka transaction
per turn: changelog, alerts, offsets; state rebuilt from the changelog).
``quix``: the same :class:`broker.patterns.core.PatternsCore` inside a
quix-streams application (``processing_guarantee="exactly-once"``, RocksDB
state with its changelog topic). quix keeps state per message key, and shared
places join every child, so the feed is regrouped on one key
(``group_by``: a repartition topic); each changelog record of the core becomes
a ``state.set_bytes`` / ``state.delete``, each alert an output record. The core
is rebuilt from the RocksDB store at the first record after a start.

Prints ``READY <t>`` at the first record it processes and ``N <records> <t>``
every 100 records (``t``: ``time.monotonic()``, shared by every process on the
machine), for bench_quix to time. Run by that bench only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.codec import Codec  # noqa: E402
from broker.patterns.core import AGENCY, PatternsCore  # noqa: E402
from broker.patterns.detectors import DEFAULTS  # noqa: E402
from broker.topics import Topics  # noqa: E402

EVERY = 100


class Progress:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> None:
        if self.n == 0 and k:
            print(f"READY {time.monotonic():.6f}", flush=True)
        before, self.n = self.n, self.n + k
        if before // EVERY != self.n // EVERY:
            print(f"N {self.n} {time.monotonic():.6f}", flush=True)


def run_own(bootstrap: str, topics: Topics) -> None:
    from broker.patterns.service import PatternService  # noqa: PLC0415

    service = PatternService(bootstrap, topics=topics, codec=Codec.default(),
                             thresholds=dict(DEFAULTS), instance_id="bench")
    progress = Progress()
    while True:
        before = service.stats.records
        service.run_once(wait_ms=50)
        progress.add(service.stats.records - before)


def run_quix(bootstrap: str, topics: Topics, state_dir: str, commit_interval: float) -> None:
    from quixstreams import Application  # noqa: PLC0415
    from quixstreams.models.serializers import Serializer  # noqa: PLC0415
    from quixstreams.state.metadata import SEPARATOR  # noqa: PLC0415

    class Second(Serializer):
        def __call__(self, value: Any, ctx: Any) -> bytes:
            return bytes(value[1])

    app = Application(
        broker_address=bootstrap, consumer_group=f"{topics.namespace}.patterns-quix",
        processing_guarantee="exactly-once", state_dir=state_dir,
        auto_offset_reset="earliest", commit_interval=commit_interval, loglevel="WARNING",
        # kafka-python's default (the own engine's): a killed member leaves the group
        # after as long, not librdkafka's 45 s.
        consumer_extra_config={"session.timeout.ms": 10_000},
    )
    feed = app.topic(topics.feed(AGENCY), value_deserializer="bytes", key_deserializer="bytes")
    out = app.topic(topics.ingest(AGENCY), value_serializer=Second(), key_serializer="bytes")
    state_key = "quix-state"
    core = PatternsCore(codec=Codec.default(), ingest_topic=topics.ingest(AGENCY),
                        state_topic=state_key, thresholds=dict(DEFAULTS),
                        now_ms=lambda: time.time_ns() // 1_000_000)
    progress = Progress()
    loaded = [False]

    def load(state: Any) -> None:
        """The core from the RocksDB store (quix restored it from its changelog)."""
        core.reset()
        lower = state._prefix + SEPARATOR  # noqa: SLF001 - quix has no public scan
        partition = state._transaction._partition  # noqa: SLF001
        n = 0
        for key, value in partition.iter_items(lower_bound=lower, upper_bound=lower + b"\xff"):
            core.restore(key[len(lower):], value)
            n += 1
        print(f"LOADED {n} {time.monotonic():.6f}", flush=True)

    def detect(value: bytes, state: Any) -> list[tuple[bytes | None, bytes]]:
        if not loaded[0]:
            load(state)
            loaded[0] = True
        alerts = []
        for o in core.on_feed(value) + core.end_turn():
            if o.topic != state_key:
                alerts.append((o.key, o.value or b""))
            elif o.value is None:
                state.delete(o.key)
            else:
                state.set_bytes(o.key, o.value)
        progress.add(1)
        return alerts

    sdf = app.dataframe(feed)
    sdf = sdf.group_by(lambda v: "partnership", name="partnership",
                       value_serializer="bytes", value_deserializer="bytes")
    sdf = sdf.apply(detect, stateful=True, expand=True)
    sdf.to_topic(out, key=lambda kv: kv[0])
    app.run()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine", choices=["own", "quix"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--state-dir", default="")
    ap.add_argument("--commit-interval", type=float, default=0.1)
    args = ap.parse_args(argv)
    topics = Topics(args.namespace)
    if args.engine == "own":
        run_own(args.bootstrap, topics)
    else:
        run_quix(args.bootstrap, topics, args.state_dir, args.commit_interval)


if __name__ == "__main__":
    main(sys.argv[1:])
