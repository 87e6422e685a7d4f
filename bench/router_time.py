"""The router benchmark's timing phases: ``txn``, ``latency``, ``cycle``, ``metadata``.

Back-to-back transactions and their retry pause, the router process's latency
from send to a ``read_committed`` reader of a feed at a steady rate, and where
one loop of the router spends its time at that rate. See bench/bench_router.py.
"""

from __future__ import annotations

import gc
import inspect
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router_load import (  # noqa: E402
    LATENCY_FEED,
    PASSTHROUGH_COPIES,
    UUID,
    Template,
    namespace,
    replace_topic,
    report,
    router_process,
    steady_load,
    transactions_v2_in_use,
)
from bench.router_timeline import Timeline  # noqa: E402
from broker import config  # noqa: E402
from broker.clock import SystemClock  # noqa: E402
from broker.codec import Codec  # noqa: E402
from broker.kafka.consumer import make_consumer  # noqa: E402
from broker.kafka.producer import TXN_RETRY_BACKOFF_MS, make_producer  # noqa: E402
from broker.kafka.structs import OffsetAndMetadata, TopicPartition  # noqa: E402
from broker.policy import ConsentStore, Policy  # noqa: E402
from broker.routing.app import build_core, build_service, settle_memory  # noqa: E402
from broker.routing.transaction import PRODUCER_BATCH_BYTES, PRODUCER_LINGER_MS  # noqa: E402


def phase_txn(bootstrap: str, base: config.Settings, policy: Path,
              tmpls: Sequence[Template], pauses_ms: Sequence[float], count: int = 100,
              block: int = 10) -> None:
    """Back-to-back small transactions, as a router's at a steady rate: begin,
    the offsets, one copy to each of three feeds, flush, commit, and at once the
    next. Wall time per transaction and how many transactional requests were
    retried (CONCURRENT_TRANSACTIONS while the previous commit completes), for
    each first retry pause: one producer per setting, ``block`` transactions in
    a row each in turn (one by one, each producer's commit would complete
    during the other's transaction), ``count`` measured per setting after a
    block to warm up."""
    made: list[tuple[float, Any, list[float], list[int]]] = []
    with namespace(bootstrap, base, policy, "txn") as env:
        outputs = [env.topics.feed(f"passthrough-{i}") for i in range(PASSTHROUGH_COPIES)]
        value = tmpls[0].make(str(uuid.uuid4()), 1_800_000_000_000)
        group = make_consumer(bootstrap, group_id=f"{env.topics.namespace}.txn")
        tp = TopicPartition(env.topics.ingest(tmpls[0].topic.rsplit(".", 1)[1]), 0)
        for pause in pauses_ms:
            producer = make_producer(
                bootstrap, transactional_id=f"{env.topics.namespace}.txn.{pause:g}",
                linger_ms=PRODUCER_LINGER_MS, batch_size=PRODUCER_BATCH_BYTES,
            )
            producer.init_transactions()
            made.append((pause, producer, [], [0]))
        try:
            for k in range((count + block) * len(made)):
                _, producer, walls, retries = made[(k // block) % len(made)]
                measured = k >= block * len(made)
                before = producer.retry_pauses.count if producer.retry_pauses else 0
                started = time.perf_counter()
                producer.begin_transaction()
                wait = producer.start_sending_offsets(
                    {tp: OffsetAndMetadata(k + 1, "", -1)}, group.group_metadata())
                sent = producer.send_all((out, uuid.uuid4().bytes, value) for out in outputs)
                producer.flush()
                sent.raise_if_failed()
                wait()
                producer.commit_transaction()
                if measured:
                    walls.append(time.perf_counter() - started)
                    after = producer.retry_pauses.count if producer.retry_pauses else 0
                    retries[0] += after - before
        finally:
            for _, producer, _, _ in made:
                producer.close()
            group.close()
    for pause, _, walls, retries in made:
        walls.sort()
        report(f"back-to-back transactions, first retry pause {pause:g} ms: p50",
               walls[len(walls) // 2] * 1000, "ms",
               f"{len(walls)} transactions, {retries[0] / len(walls):.2f} retried requests each")
        report(f"back-to-back transactions, first retry pause {pause:g} ms: p99",
               walls[int(len(walls) * 0.99)] * 1000, "ms")


def latency_settings(txn_retry_ms: float, bootstrap: str, transactions: str = "v2") -> str:
    """The router's settings that the latency depends on, for the report."""
    from kafka import KafkaProducer  # noqa: PLC0415 - the client's own default, as used

    from broker.kafka._kafka_python import HANDOVER_S  # noqa: PLC0415
    from broker.routing.service import RouterService  # noqa: PLC0415

    v2 = transactions == "v2" and transactions_v2_in_use(bootstrap)
    protocol = "transactions v2 (KIP-890)" if v2 else "transactions v1 (kafka-python's own)"

    retry_ms = KafkaProducer.DEFAULT_CONFIG["retry_backoff_ms"]
    max_batch = inspect.signature(RouterService.__init__).parameters["max_batch"].default
    return (
        f"router: transactional retry pause {txn_retry_ms:g} ms doubling to "
        f"retry_backoff_ms {retry_ms} ms (kafka-python's default, which it "
        f"used to sleep whole), linger_ms {PRODUCER_LINGER_MS}, batch.size "
        f"{PRODUCER_BATCH_BYTES // 1024} KiB, max {max_batch} events a transaction; "
        f"{protocol}; offsets handed to the sender for up to {HANDOVER_S * 1000:g} ms"
    )


def phase_latency(bootstrap: str, base: config.Settings, policy_path: Path,
                  tmpls: Sequence[Template], rate: float, seconds: float,
                  warmup_s: float = 5.0, txn_retry_ms: float = TXN_RETRY_BACKOFF_MS,
                  sources: str = "name", routers: int = 1, transactions: str = "v2") -> None:
    codec = Codec.default()
    policy = Policy.load(policy_path, field_classes=codec.data_classes())
    now = int(time.time() * 1000)
    to_feed = {
        t.kind + t.key.decode(): any(
            d.subscriber == LATENCY_FEED and d.outcome == "SHARE"
            for d in policy.decide_all(t.event, ConsentStore(), now)
        )
        for t in tmpls
    }
    with namespace(bootstrap, base, policy_path, "lat") as env:
        tmpls = [replace_topic(t, env.topics) for t in tmpls]
        sent: dict[bytes, int] = {}
        expected: set[bytes] = set()
        latencies: list[float] = []
        # The same split at the router's send (the feed record's CreateTime, set
        # when the router hands it to its producer, after routing it): before it
        # (ingest, poll, routing) and after it (flush, commit, the reader's fetch).
        to_send: list[float] = []
        after_send: list[float] = []
        received: set[bytes] = set()
        halt = threading.Event()
        measure_from = [float("inf")]

        def load() -> None:
            producer = make_producer(bootstrap, linger_ms=2)
            i, next_at = 0, time.monotonic()
            measure_from[0] = time.time() * 1000 + warmup_s * 1000
            end = time.monotonic() + warmup_s + seconds
            while time.monotonic() < end and not halt.is_set():
                t = tmpls[i % len(tmpls)]
                eid = str(uuid.uuid4())
                at = int(time.time() * 1000)
                sent[eid.encode()] = at
                if at >= measure_from[0] and to_feed[t.kind + t.key.decode()]:
                    expected.add(eid.encode())
                producer.send(t.topic, t.make(eid, at), key=t.key)
                i += 1
                next_at += 1 / rate
                delay = next_at - time.monotonic()
                if delay > 0.001:
                    time.sleep(delay)
            producer.flush()
            producer.close()

        def read() -> None:
            consumer = make_consumer(bootstrap, group_id=None, isolation_level="read_committed")
            parts = consumer.partitions_for_topic(env.topics.feed(LATENCY_FEED)) or set()
            consumer.assign([TopicPartition(env.topics.feed(LATENCY_FEED), p) for p in parts])
            try:
                while not halt.is_set():
                    records = consumer.poll_records(timeout_ms=50)
                    at = time.time() * 1000
                    for r in records:
                        for m in UUID.finditer(r.value or b""):
                            eid = m.group(0)
                            if eid in sent:
                                received.add(eid)
                                if sent[eid] >= measure_from[0]:
                                    latencies.append(at - sent[eid])
                                    to_send.append(r.timestamp - sent[eid])
                                    after_send.append(at - r.timestamp)
                                break
            finally:
                consumer.close()

        with ExitStack() as stack:
            procs = [
                stack.enter_context(
                    router_process(env, f"bench-latency-{i}", txn_retry_ms, sources,
                                   transactions))
                for i in range(routers)
            ]
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            time.sleep(5)  # the router joins its group meanwhile
            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            time.sleep(warmup_s)
            cpu_from, sent_from = sum(_cpu_s(p.pid) for p in procs), len(sent)
            loader.join()
            cpu_used = sum(_cpu_s(p.pid) for p in procs) - cpu_from
            sent_measured = len(sent) - sent_from
            deadline = time.monotonic() + 30
            while not expected <= received and time.monotonic() < deadline:
                time.sleep(0.2)
            halt.set()
            reader.join(10)
        missing = len(expected - received)
        lat = sorted(latencies)
        if not lat:
            print("no latency samples (the router did not deliver?)")
            return
        q = statistics.quantiles(lat, n=100)
        note = f"{len(lat):,} events to {LATENCY_FEED} over {seconds:.0f} s"
        print(f"  {latency_settings(txn_retry_ms, bootstrap, transactions)}; "
              f"subscribed by {sources}; {routers} router process(es)")
        at = f"at {rate:,.0f}/s, txn retry {txn_retry_ms:g} ms"
        if routers != 1:
            at += f", {routers} routers"
        if sources != "name":
            at += f", by {sources}"
        if transactions != "v2":
            at += f", transactions {transactions}"
        report(f"latency {at}, reported_at -> feed, p50", q[49], "ms", note)
        report(f"latency {at}, reported_at -> feed, p99", q[98], "ms")
        report(f"latency {at}, reported_at -> feed, max", lat[-1], "ms")
        if sent_measured and cpu_used:
            # At low rates mostly each transaction's own CPU (docs/PERFORMANCE.md).
            report(f"latency {at}, router CPU per event", cpu_used / sent_measured * 1e6, "µs",
                   "all router processes, user + system, over the measured load")
        for part, values in (("reported_at -> router's send", to_send),
                             ("router's send -> feed", after_send)):
            qs = statistics.quantiles(sorted(values), n=100)
            report(f"latency {at}, {part}, p50", qs[49], "ms")
            report(f"latency {at}, {part}, p99", qs[98], "ms")
        if missing:
            print(f"  ({missing} expected events had not arrived 30 s after the load stopped)")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase_cycle(bootstrap: str, base: config.Settings, policy: Path,
                tmpls: Sequence[Template], rate: float, seconds: float) -> None:
    """Where a router's loop spends its time at a steady input rate (in process).

    The latency at a steady rate is about one loop: the events that arrived
    during the last one are polled, routed, flushed and committed. Each step of
    the loop is timed on the service object; the load is sent by another process.
    """
    del tmpls  # the loader process makes the same templates for its namespace
    with namespace(bootstrap, base, policy, "cycle") as env:
        sizes: list[int] = []
        clock = SystemClock()
        service = build_service(
            env.settings, bootstrap, clock=clock, instance_id="bench-cycle",
            core=build_core(env.settings, clock=clock, codec=Codec.default()),
            on_batch=lambda batch: sizes.append(len(batch)),
        )
        spent: dict[str, float] = {}
        ages: list[tuple[float, float]] = []  # per poll: newest, oldest record (ms)
        timeline = Timeline()

        def timed(obj: Any, name: str, label: str) -> None:
            inner = getattr(obj, name)

            def run(*a: Any, **k: Any) -> Any:
                started = time.perf_counter()
                timeline.step("begins", label.strip())
                out = inner(*a, **k)
                timeline.step("ends", label.strip())
                # From the first commit on (not the wait for the loader), and not the
                # empty polls once the load has stopped.
                if sizes and (label != "poll" or out):
                    spent[label] = spent.get(label, 0.0) + time.perf_counter() - started
                if sizes and label == "poll" and out:
                    # How old the batch is when the loop gets it (the loader's
                    # CreateTime): what a fetch sent early in the previous
                    # transaction would add to every event's latency.
                    now_ms = time.time() * 1000
                    stamps = [r.timestamp for records in out.values() for r in records]
                    ages.append((now_ms - max(stamps), now_ms - min(stamps)))
                return out

            setattr(obj, name, run)

        steps = [("_poll", "poll"), ("_catch_up_audit", "audit catch-up"), ("_update_lag", "lag"),
                 ("_start", "route + send"), ("_finish", "flush + commit")]
        for name, label in steps:
            timed(service, name, label)
        original_producer = service._new_producer

        def instrumented(producer: Any) -> Any:
            timed(producer, "commit_transaction", "  of which commit")
            return producer

        producers: list[Any] = []
        if service._producer is not None:  # opened with the service
            instrumented(service._producer)
            producers.append(service._producer)
        # ... and any replacement after a failure
        service._new_producer = lambda: instrumented(original_producer())  # type: ignore[method-assign]

        # The load from a process of its own: a thread here would share the
        # interpreter (and its lock) with the router and inflate every step.
        loader = multiprocessing.get_context("spawn").Process(
            target=steady_load, args=(bootstrap, env.topics.namespace, rate, seconds),
            daemon=True)
        loader.start()
        settle_memory()
        pauses_gc: list[tuple[int, float]] = []
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            elif sizes:
                pauses_gc.append((info["generation"], time.perf_counter() - gc_started[0]))

        gc.callbacks.append(on_gc)
        try:
            with timeline.recording():
                service.run(idle_exit_s=3)
        finally:
            gc.callbacks.remove(on_gc)
        loader.join(60)
    cycles = max(len(sizes) - 1, 1)  # the steps of the first are not counted
    print(f"  {cycles} transactions, {sum(sizes) / cycles:.0f} events each on average")
    for label in [label for _, label in steps] + ["  of which commit"]:
        report(f"loop at {rate:,.0f}/s: {label.strip()}", spent.get(label, 0) / cycles * 1000,
               "ms per transaction")
    if len(ages) > 1:
        for i, which in enumerate(("newest", "oldest")):
            qs = statistics.quantiles(sorted(a[i] for a in ages), n=100)
            report(f"loop at {rate:,.0f}/s: age of the {which} record at the poll, p50",
                   qs[49], "ms", "now - its CreateTime (the loader's send)")
            report(f"loop at {rate:,.0f}/s: age of the {which} record at the poll, p99",
                   qs[98], "ms")
    # Skip the transactions before the load (joining) and the last (idle, then stopping).
    timeline.report(rate, "route + send", skip=1)
    for generation in (0, 1, 2):
        mine = [d for g, d in pauses_gc if g == generation]
        report(f"loop at {rate:,.0f}/s: garbage collections, generation {generation}",
               len(mine) / seconds, "per s",
               f"longest {max(mine, default=0) * 1000:.1f} ms, "
               f"{sum(mine) / cycles * 1000:.2f} ms per transaction")
    pauses = [p.retry_pauses for p in producers if p.retry_pauses is not None]
    if pauses:
        # A retried AddOffsets/AddPartitions (CONCURRENT_TRANSACTIONS while the
        # previous commit completes) pauses the producer's sender thread.
        report(f"loop at {rate:,.0f}/s: transactional retries", pauses[0].count / cycles,
               "per transaction", f"first pause {TXN_RETRY_BACKOFF_MS:g} ms, doubling")
        report(f"loop at {rate:,.0f}/s: paused before transactional retries",
               pauses[0].seconds / cycles * 1000, "ms per transaction")


def phase_metadata(bootstrap: str, base: config.Settings, policy_path: Path,
                   rounds: int = 10) -> None:
    """What one metadata refresh costs the router's process: for every topic in the
    cluster (a regex subscription's) against the policy's topics (by name, as
    shipped; broker/routing/sources.py). Process CPU time, alternated rounds: the
    decode runs in kafka-python's network thread and holds the GIL meanwhile.
    Pokes kafka-python's cluster object (no public call refreshes named topics)."""
    from broker.routing.sources import policy_topics  # noqa: PLC0415

    codec = Codec.default()
    policy = Policy.load(policy_path, field_classes=codec.data_classes())
    named = policy_topics(
        base.topics, [a.id for a in policy.agencies], [s.id for s in policy.subscribers]
    )
    consumer = make_consumer(bootstrap, group_id=None)
    raw = consumer.raw
    cluster = raw._client.cluster
    try:
        every = len(raw.topics())

        def refresh(all_topics: bool) -> float:
            cluster.need_all_topic_metadata = all_topics
            cluster.set_topics([] if all_topics else named)
            started = time.process_time()
            raw._net.run(raw._manager.wait_for, cluster.request_update(), None)
            return (time.process_time() - started) * 1000

        by_regex, by_name = [], []
        for _ in range(rounds):
            by_regex.append(refresh(True))
            by_name.append(refresh(False))
    finally:
        consumer.close()
    regex, name = statistics.median(by_regex), statistics.median(by_name)
    report(f"metadata refresh, every topic ({every:,}: by regex)", regex, "ms CPU")
    report(f"metadata refresh, the policy's {len(named)} topics (by name)", name, "ms CPU",
           f"-> {regex / name:.0f}x less; the router refreshes every 5 s")
