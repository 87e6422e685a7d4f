"""The router benchmark's CPU and rate phases: ``core``, ``send``, ``throughput``, ``rss``.

The routing core alone (no Kafka), the producer's send paths, the router's
throughput against bare kafka-python passthroughs on the same broker and
input, and the router process's resident set size over a long run. See
bench/bench_router.py for what each prints.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router_load import (  # noqa: E402
    PASSTHROUGH_COPIES,
    Committed,
    Env,
    Template,
    namespace,
    preload,
    replace_topic,
    report,
    router_process,
    rss_mb,
    transactions_v2_in_use,
)
from broker import config  # noqa: E402
from broker.audit.leaf import audit_encoder  # noqa: E402
from broker.clock import SystemClock  # noqa: E402
from broker.codec import Codec  # noqa: E402
from broker.kafka import configuration as kafka_configuration  # noqa: E402
from broker.kafka.consumer import make_consumer  # noqa: E402
from broker.kafka.producer import make_producer  # noqa: E402
from broker.kafka.structs import OffsetAndMetadata  # noqa: E402
from broker.routing.app import build_core, build_service, settle_memory  # noqa: E402
from broker.routing.core import Inbound, Routed  # noqa: E402
from broker.routing.transaction import PRODUCER_BATCH_BYTES, PRODUCER_LINGER_MS  # noqa: E402


def phase_core(tmpls: Sequence[Template], env_settings: config.Settings, profile: bool) -> None:
    codec = Codec.default()
    core = build_core(env_settings, clock=SystemClock(), codec=codec)
    tmpls = [replace_topic(t, env_settings.topics) for t in tmpls]
    now = int(time.time() * 1000)
    msgs = [
        Inbound(t.topic, 0, i, t.key, t.make(str(uuid.uuid4()), now))
        for i, t in enumerate(tmpls[i % len(tmpls)] for i in range(6000))
    ]
    size = sum(len(m.value or b"") for m in msgs) / len(msgs)
    copies = leaves_n = 0

    def route(batch: Sequence[Inbound]) -> None:
        nonlocal copies, leaves_n
        leaves: list[bytes] = []
        for m in batch:
            r = core.handle(m)
            copies += len(r.shared)
            leaves.extend(r.leaves)
        leaves_n += len(leaves)
        audit_encoder(leaves)

    route(msgs[:1000])  # warm caches (compiled validators, plans)
    copies = leaves_n = 0
    started = time.process_time()
    route(msgs[1000:4000])
    cpu = time.process_time() - started
    report("core: CPU per event", cpu / 3000 * 1e6, "µs", f"events of ~{size:.0f} bytes")
    report("core: events per CPU-second", 3000 / cpu, "events/s")
    report("core: copies per event", copies / 3000, "copies")
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        route(msgs[4000:])
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
        print(out.getvalue())


@dataclass
class Timeline:
    """Commits as they happen: a rate, and this process's CPU time per event
    (every thread: consumer, producer sender, routing) over the same window.
    The CPU figure hardly moves when the shared VM slows down; the rate does."""

    first_at: float | None = None
    first_count: int = 0
    last_at: float = 0.0
    count: int = 0
    first_cpu: float = 0.0
    last_cpu: float = 0.0

    def committed(self, n: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.count += n
        if self.first_at is None:
            self.first_at, self.first_count, self.first_cpu = now, self.count, cpu
        self.last_at, self.last_cpu = now, cpu

    def cpu_us(self) -> float:
        """CPU microseconds per event between the first and the last commit."""
        events = self.count - self.first_count
        return (self.last_cpu - self.first_cpu) / events * 1e6 if events else float("nan")

    def rate(self) -> float:
        if self.first_at is None or self.last_at <= self.first_at:
            return float("nan")
        return (self.count - self.first_count) / (self.last_at - self.first_at)


def passthrough(env: Env, n: int, *, transactional: bool, ours: bool = False,
                v2: bool = True, deadline_s: float = 600) -> Timeline:
    """Consume each ingest record, produce PASSTHROUGH_COPIES copies; its commits.

    Each copy is sent with kafka-python's own ``KafkaProducer.send`` (the bare
    baseline the issue names), or with ``ours`` through :meth:`Producer.send_all`,
    the router's send path (:class:`broker.kafka._kafka_python.KeyedAppender`), flushed
    and checked before the commit as the router does. The producer's settings
    are the router's either way. ``v2``: transactions v2 when the cluster has it
    (as the router), else kafka-python's own protocol (v1) as it ships."""
    topics = env.topics
    mode = ("txn" if transactional else "plain") + ("-ours" if ours else "") + ("" if v2 else "-v1")
    consumer = make_consumer(
        env.bootstrap,
        group_id=f"{topics.namespace}.passthrough-{mode}",
        pattern=topics.ingest_pattern,
        isolation_level="read_committed",
        max_poll_records=500,
    )
    shipped, kafka_configuration.TRANSACTIONS_V2 = kafka_configuration.TRANSACTIONS_V2, v2
    try:
        producer = make_producer(
            env.bootstrap,
            transactional_id=f"{topics.namespace}.passthrough-{mode}" if transactional else None,
            # As the router's producer: a batch's records leave together at the flush.
            linger_ms=PRODUCER_LINGER_MS,
            batch_size=PRODUCER_BATCH_BYTES,
        )
    finally:
        kafka_configuration.TRANSACTIONS_V2 = shipped
    outputs = [topics.feed(f"passthrough-{i}") for i in range(PASSTHROUGH_COPIES)]
    line = Timeline()
    try:
        if transactional:
            producer.init_transactions()
        stop_at = time.monotonic() + deadline_s
        while line.count < n and time.monotonic() < stop_at:
            batches = consumer.poll(timeout_ms=200, max_records=500)
            if not batches:
                continue
            group = consumer.group_metadata()
            if transactional:
                producer.begin_transaction()
            count = sum(len(records) for records in batches.values())
            if ours:
                sent = producer.send_all(
                    (out, r.key, r.value)
                    for records in batches.values() for r in records for out in outputs
                )
            else:
                send = producer.raw.send
                for records in batches.values():
                    for r in records:
                        for out in outputs:
                            send(out, r.value, key=r.key)
            offsets = {
                tp: OffsetAndMetadata(records[-1].offset + 1) for tp, records in batches.items()
            }
            if transactional:
                if ours:  # as the router: every copy acknowledged before the commit
                    producer.flush()
                    sent.raise_if_failed()
                producer.send_offsets_to_transaction(offsets, group)
                producer.commit_transaction()
            else:
                producer.flush()
                consumer.commit(offsets)
            line.committed(count)
    finally:
        consumer.close()
        producer.close()
    return line


def phase_send(bootstrap: str, base: config.Settings, policy: Path,
               tmpls: Sequence[Template], per_txn: int = 500, rounds: int = 7) -> None:
    """kafka-python's ``KafkaProducer.send`` against our ``Producer.send``
    (:class:`broker.kafka._kafka_python.KeyedAppender`) and ``Producer.send_all`` (the
    router's: records checked per batch, no future each): one producer,
    transactions of ``per_txn`` events with a 1 KB copy to each of three feeds,
    the paths taking turns. CPU per record while sending; CPU (all threads) and
    wall time per record including the flush and commit."""
    paths = ("KafkaProducer.send", "Producer.send", "Producer.send_all")
    figures: dict[str, tuple[list[float], list[float], list[float]]] = {
        p: ([], [], []) for p in paths
    }
    with namespace(bootstrap, base, policy, "send") as env:
        outputs = [env.topics.feed(f"passthrough-{i}") for i in range(PASSTHROUGH_COPIES)]
        values = [t.make(str(uuid.uuid4()), 1_800_000_000_000) for t in tmpls]
        keys = [uuid.uuid4().bytes for _ in range(per_txn)]
        producer = make_producer(
            env.bootstrap, transactional_id=f"{env.topics.namespace}.send",
            linger_ms=PRODUCER_LINGER_MS, batch_size=PRODUCER_BATCH_BYTES,
        )
        try:
            producer.init_transactions()
            for k in range(rounds + 1):
                for path in paths:
                    producer.begin_transaction()
                    wall, cpu = time.perf_counter(), time.process_time()
                    if path == "Producer.send_all":
                        sent = producer.send_all(
                            (out, key, values[i % len(values)])
                            for i, key in enumerate(keys) for out in outputs
                        )
                    else:
                        send = producer.raw.send if path == "KafkaProducer.send" else producer.send
                        for i, key in enumerate(keys):
                            value = values[i % len(values)]
                            for out in outputs:
                                send(out, value, key=key)
                    sending = time.process_time() - cpu
                    producer.flush()
                    if path == "Producer.send_all":
                        sent.raise_if_failed()
                    producer.commit_transaction()
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if k:  # the first round warms up (metadata, connections)
                        us = 1e6 / (per_txn * len(outputs))
                        for figure, took in zip(figures[path], (sending, cpu, wall), strict=True):
                            figure.append(took * us)
        finally:
            producer.close()
    base_sending, base_cpu, base_wall = (statistics.median(f) for f in figures[paths[0]])
    for path in paths:
        sending, cpu, wall = (statistics.median(f) for f in figures[path])
        vs = "" if path == paths[0] else f"{{:.2f}}x {paths[0]}'s"
        report(f"{path}, CPU per record while sending", sending, "us",
               vs.format(sending / base_sending) if vs else
               f"median of {rounds} transactions of {per_txn * len(outputs):,} records")
        report(f"{path}, CPU per record with flush + commit", cpu, "us",
               vs.format(cpu / base_cpu) if vs else "all threads")
        report(f"{path}, wall per record with flush + commit", wall, "us",
               vs.format(wall / base_wall) if vs else "")


def router_in_process(
    env: Env, n: int, max_batch: int = config.DEFAULT_ROUTER_MAX_BATCH
) -> tuple[Timeline, Any]:
    clock = SystemClock()
    line = Timeline()

    def on_batch(batch: list[Routed]) -> None:
        line.committed(len(batch))

    service = build_service(
        env.settings,
        env.bootstrap,
        clock=clock,
        instance_id="bench",
        core=build_core(env.settings, clock=clock, codec=Codec.default()),
        on_batch=on_batch,
        max_batch=max_batch,
    )
    settle_memory()  # as `safeshare route` does
    stats = service.run(max_events=n, idle_exit_s=60)
    return line, stats


def phase_throughput(bootstrap: str, base: config.Settings, policy: Path, n: int,
                     tmpls: Sequence[Template], rounds: int = 5,
                     max_batches: Sequence[int] = (config.DEFAULT_ROUTER_MAX_BATCH,)) -> None:
    """Passthrough and router taking turns, ``rounds`` times, each round on fresh topics:
    the machine's speed drifts by tens of percent over a minute (a shared VM; CPU
    per event too, if less), so a ratio is taken within each round and the median
    of the rounds reported. A warm-up round on a quarter of the events comes
    first and is not counted: the first transactional passthrough of a process ran
    a third slower than the later ones, which flattered the router's first ratio.
    With several ``max_batches`` (the router's most events per transaction) the
    rounds go to each in turn, ``rounds`` each; the first is reported in full,
    the others as a comparison."""
    plains, txns, ours_, v1s = [], [], [], []
    by: dict[int, dict[str, list[float]]] = {
        b: {"rate": [], "ratio": [], "ratio_v1": [], "ratio_ours": [], "cpu": [], "by_cpu": []}
        for b in max_batches
    }
    cpus: list[tuple[float, float]] = []  # the passthroughs' (txn, ours) CPU per event
    for k in range(-1, rounds * len(max_batches)):
        warm_up = k < 0
        m = max(n // 4, 1) if warm_up else n
        batch = max_batches[max(k, 0) % len(max_batches)]
        with namespace(bootstrap, base, policy, f"tput{k + 1}") as env:
            took = preload(bootstrap, [replace_topic(t, env.topics) for t in tmpls], m)
            plain = passthrough(env, m, transactional=False).rate()
            txn_line = passthrough(env, m, transactional=True)
            v1 = passthrough(env, m, transactional=True, v2=False).rate()
            ours_line = passthrough(env, m, transactional=True, ours=True)
            line, stats = router_in_process(env, m, batch)
            txn, ours, rate = txn_line.rate(), ours_line.rate(), line.rate()
            cpu_txn, cpu_ours, cpu = txn_line.cpu_us(), ours_line.cpu_us(), line.cpu_us()
            per_event = max(stats.consumed, 1)
            name = "warm-up (not counted)" if warm_up else f"round {k + 1}"
            print(f"  {name}: preloaded {m:,} in {took:.1f} s; passthrough {plain:,.0f}"
                  f" (txn {txn:,.0f}, txn v1 {v1:,.0f}, txn through our send path {ours:,.0f}),"
                  f" router (at most {batch:,} a transaction) {rate:,.0f} events/s ->"
                  f" {rate / txn:.2f} ({rate / ours:.2f});"
                  f" CPU per event {cpu_txn:.0f} / {cpu_ours:.0f} / {cpu:.0f} us"
                  f" ({stats.shared / per_event:.2f} copies and"
                  f" {(stats.shared + stats.withheld) / per_event:.2f} leaves per event,"
                  f" {stats.transactions} transactions)")
            if warm_up:
                continue
            plains.append(plain)
            txns.append(txn)
            v1s.append(v1)
            ours_.append(ours)
            cpus.append((cpu_txn, cpu_ours))
            got = by[batch]
            got["rate"].append(rate)
            got["ratio"].append(rate / txn)
            got["ratio_v1"].append(rate / v1)
            got["ratio_ours"].append(rate / ours)
            got["cpu"].append(cpu)
            got["by_cpu"].append(cpu_txn / cpu)
    med = statistics.median
    report("passthrough (no txn), 1 in -> 3 out", med(plains), "events/s",
           f"median of {len(plains)}")
    report("passthrough (transactional), 1 in -> 3 out", med(txns), "events/s",
           f"transactions v2: {'yes' if transactions_v2_in_use(bootstrap) else 'no'}")
    report("passthrough (transactional, v1), 1 in -> 3 out", med(v1s), "events/s",
           "kafka-python's own transaction protocol")
    report("passthrough (transactional, our send path), 1 in -> 3 out", med(ours_), "events/s")
    shipped = max_batches[0]
    got = by[shipped]
    ratios, by_cpu, ratios_v1 = got["ratio"], got["by_cpu"], got["ratio_v1"]
    ratios_ours = got["ratio_ours"]
    report("router (transactional, audited)", med(got["rate"]), "events/s",
           f"at most {shipped:,} events a transaction")
    report("router / transactional passthrough", med(ratios), "ratio",
           f"median of the rounds' ratios ({min(ratios):.2f}-{max(ratios):.2f}); both on v2")
    report("router / transactional passthrough on v1", med(ratios_v1), "ratio",
           f"the router on v2, the passthrough on kafka-python's v1"
           f" ({min(ratios_v1):.2f}-{max(ratios_v1):.2f})")
    cpu_txn, cpu_ours = (med(c) for c in zip(*cpus, strict=True))
    report("passthrough (transactional), CPU per event", cpu_txn, "us",
           "this process, all threads, over the same window as the rate")
    report("passthrough (transactional, our send path), CPU per event", cpu_ours, "us")
    report("router (transactional, audited), CPU per event", med(got["cpu"]), "us")
    report("router / transactional passthrough, by CPU", med(by_cpu), "ratio",
           f"passthrough CPU / router CPU per event, median of the rounds'"
           f" ({min(by_cpu):.2f}-{max(by_cpu):.2f})")
    report("router / transactional passthrough on our send path", med(ratios_ours), "ratio",
           f"the routing work alone: both send alike ({min(ratios_ours):.2f}-"
           f"{max(ratios_ours):.2f})")
    for other in max_batches[1:]:
        alt = by[other]
        report(f"router at most {other:,} a transaction / transactional passthrough",
               med(alt["ratio"]), "ratio",
               f"median of its {len(alt['ratio'])} rounds ({min(alt['ratio']):.2f}-"
               f"{max(alt['ratio']):.2f}); CPU per event {med(alt['cpu']):.0f} us,"
               f" by CPU {med(alt['by_cpu']):.2f}; {shipped:,}: {med(ratios):.2f}")
    # Scaling out: router processes in one group share the partitions (docs/DESIGN.md).
    # Three times the events: the second process's join (a rebalance, seconds)
    # falls inside the timing, and over 20,000 events it was a third of the run.
    one = router_processes(bootstrap, base, policy, 3 * n, tmpls, 1)
    report("router, 1 process", one, "events/s", f"{3 * n:,} events")
    two = router_processes(bootstrap, base, policy, 3 * n, tmpls, 2)
    report("router, 2 processes in one group", two, "events/s", f"{two / one:.2f}x one process")


def router_processes(bootstrap: str, base: config.Settings, policy: Path, n: int,
                     tmpls: Sequence[Template], count: int) -> float:
    """``count`` router processes in one group on ``n`` preloaded events; events/s.

    Timed from the first to the last commit seen in the group's offsets (polled
    every 0.25 s), so group joins are left out but a rebalance as the second
    process joins is not.
    """
    with namespace(bootstrap, base, policy, f"x{count}") as env:
        preload(bootstrap, [replace_topic(t, env.topics) for t in tmpls], n)
        committed = Committed(env)
        try:
            with ExitStack() as stack:
                procs = [
                    stack.enter_context(router_process(env, f"bench-{i}")) for i in range(count)
                ]
                first: tuple[float, int] | None = None
                deadline = time.monotonic() + 900
                while time.monotonic() < deadline and all(p.poll() is None for p in procs):
                    time.sleep(0.25)
                    done = committed.total()
                    now = time.monotonic()
                    if done and first is None:
                        first = (now, done)
                    if done >= n and first is not None and now > first[0]:
                        return (done - first[1]) / (now - first[0])
        finally:
            committed.close()
    return float("nan")


def phase_rss(bootstrap: str, base: config.Settings, policy: Path,
              tmpls: Sequence[Template], n: int) -> None:
    with namespace(bootstrap, base, policy, "rss") as env:
        took = preload(bootstrap, [replace_topic(t, env.topics) for t in tmpls], n)
        print(f"preloaded {n:,} events in {took:.1f} s")
        committed = Committed(env)
        samples: list[tuple[int, float]] = []  # (events routed, RSS MB) every 0.5 s
        first: tuple[float, int] | None = None
        done, end = 0, time.monotonic()
        try:
            with router_process(env, "bench-rss") as proc:
                started = time.monotonic()
                while done < n and proc.poll() is None:
                    time.sleep(0.5)
                    done = committed.total()
                    if done and first is None:
                        first = (time.monotonic(), done)
                    samples.append((done, rss_mb(proc.pid)))
                    if time.monotonic() - started > 3600:
                        print("  giving up after an hour")
                        break
                end = time.monotonic()
        finally:
            committed.close()
        if first is None or not done:
            print("router made no progress")
            return
        # The largest RSS seen in each tenth of the run: the resident set breathes
        # with each batch, so single samples say little; a leak shows as a trend.
        peaks: list[float] = []
        for k in range(10):
            lo, hi = done * k / 10, done * (k + 1) / 10
            stretch = [mb for d, mb in samples if lo < d <= hi or (k == 0 and d == 0)]
            if stretch:
                peaks.append(max(stretch))
                print(f"  {int(hi):>10,} events routed  peak RSS {peaks[-1]:7.1f} MB")
        report("router peak RSS, first tenth of the run", peaks[0], "MB")
        report("router peak RSS, last tenth of the run", peaks[-1], "MB", f"{done:,} events")
        report("router RSS growth, first -> last tenth", peaks[-1] - peaks[0], "MB")
        if len(peaks) > 2:  # the allocator's arenas fill up during the first stretch
            report("router RSS growth, second -> last tenth", peaks[-1] - peaks[1], "MB")
        report("router peak RSS over the run", max(peaks), "MB")
        report("router long-run throughput", (done - first[1]) / (end - first[0]), "events/s",
               "as a process")
