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
                route + send, flush + commit) -- what the latency is made of;
``rss``         the router as a process routing ``--events`` events
                (SAFESHARE_BENCH_EVENTS, default 100,000; the issue's target is a
                million) preloaded: its resident set size as it goes.

Each figure is printed for people and once more as a machine-readable line::

    BENCH {"name": "...", "value": ..., "unit": "..."}
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import os
import pstats
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker import config  # noqa: E402
from broker.clock import SystemClock  # noqa: E402
from broker.codec import Codec, long_bytes  # noqa: E402
from broker.kafka.admin import Admin  # noqa: E402
from broker.kafka.configuration import TopicSpec, standard_topic_specs  # noqa: E402
from broker.kafka.consumer import make_consumer  # noqa: E402
from broker.kafka.producer import TXN_RETRY_BACKOFF_MS, make_producer  # noqa: E402
from broker.kafka.structs import OffsetAndMetadata, TopicPartition  # noqa: E402
from broker.policy import ConsentStore, Policy  # noqa: E402
from broker.policy.exceptions import PolicyError  # noqa: E402
from broker.routing.app import audit_encoder, build_core, build_service, settle_memory  # noqa: E402
from broker.routing.core import Inbound, Routed  # noqa: E402
from broker.routing.transaction import PRODUCER_BATCH_BYTES, PRODUCER_LINGER_MS  # noqa: E402
from broker.topics import Topics  # noqa: E402

EVENTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "events"
SUBSCRIBERS = ("torbay-mash", "torbay-csc", "torbay-health-safeguarding")
LATENCY_FEED = "torbay-mash"
PASSTHROUGH_COPIES = 3
PARTITIONS = 3
TARGET_BYTES = 1000
#: Event kinds routed, each with a lawful reason to share without consent, so
#: that most reach all three subscribers (as the issue's figures assume).
KINDS = (
    "missing_episode",
    "health_concern",
    "exploitation_screening",
    "police_notification",
    "education_concern",
    "return_home_interview",
)
FILLER = (
    "Seen with older males near the harbour after school on several evenings.",
    "Attendance has fallen to sixty per cent this term with unexplained absences.",
    "Carer reports new phone and clothes the family cannot account for.",
    "Strategy discussion requested; previous referral closed without assessment.",
    "Disclosed staying at an address in another town with people met online.",
    "Returned home late, intoxicated, and would not say where she had been.",
    "Mother worried about contact with an adult who collects him from school.",
    "Missing from placement twice this month, found each time in the same area.",
)
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def report(name: str, value: float, unit: str, note: str = "") -> None:
    shown = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    print(f"{name:<44} {shown:>14} {unit}{'  (' + note + ')' if note else ''}", flush=True)
    print("BENCH " + json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


# -- the load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One encoded example event whose event id and ``reported_at`` can be replaced in place.

    The id is a 36-character string and a timestamp in milliseconds between 2004
    and 2039 is a 6-byte zig-zag varint, so both keep their length: the result is
    the valid encoding of the event with the new values (checked in ``templates``).
    """

    kind: str
    topic: str
    key: bytes
    head: bytes
    middle: bytes
    tail: bytes
    event: dict[str, Any]

    def make(self, event_id: str, reported_at_ms: int) -> bytes:
        ts = long_bytes(reported_at_ms)
        assert len(ts) == 6
        return self.head + event_id.encode() + self.middle + ts + self.tail


def templates(codec: Codec, topics: Topics, variants: int = 4) -> list[Template]:
    rng = random.Random(7)
    marker_id = "00000000-0000-4000-8000-00000000beef"
    marker_ms = 1_700_000_000_123
    out: list[Template] = []
    for kind in KINDS:
        base = json.loads((EVENTS / f"{kind}.json").read_text())
        for _ in range(variants):
            obj = json.loads(json.dumps(base))
            obj["event_id"] = marker_id
            obj["reported_at"] = marker_ms
            obj["subject"]["pseudonym"] = f"psn-BNCH-{len(out):04d}"
            obj["sharing"] = {
                "no_consent_reason": "WOULD_PREJUDICE_PROTECTION",
                "justification": "Asking would alert the adults involved.",
                "break_glass": False,
            }
            summary = obj["summary"]
            while True:
                event = codec.from_json(obj)
                data = codec.encode(event)
                if len(data) >= TARGET_BYTES - 60:
                    break
                summary += " " + rng.choice(FILLER)
                obj["summary"] = summary
            id_bytes, ts_bytes = marker_id.encode(), long_bytes(marker_ms)
            assert data.count(id_bytes) == 1 and data.count(ts_bytes) == 1, kind
            i, j = data.index(id_bytes), data.index(ts_bytes)
            assert i < j
            t = Template(
                kind,
                topics.ingest(obj["source"]["agency_id"]),
                obj["subject"]["pseudonym"].encode(),
                data[:i],
                data[i + 36 : j],
                data[j + 6 :],
                event,
            )
            probe = codec.decode(t.make(str(uuid.uuid4()), 1_800_000_000_000))
            assert probe["reported_at"].timestamp() == 1_800_000_000, "patching broke the event"
            out.append(t)
    return out


def bench_policy(codec: Codec, directory: Path) -> Path:
    """The example policy with only SUBSCRIBERS, minus the rules that no longer apply."""
    raw = yaml.safe_load((config.load().policy_path).read_text())
    raw["subscribers"] = [s for s in raw["subscribers"] if s["id"] in SUBSCRIBERS]
    identity = raw.get("identity") or {}
    if "deciders" in identity:  # only subscribers still in the policy may decide links
        identity["deciders"] = [d for d in identity["deciders"] if d in SUBSCRIBERS]
    path = directory / "bench-policy.yaml"
    while True:
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            Policy.load(path, field_classes=codec.data_classes())
            return path
        except PolicyError as exc:
            dead = set(re.findall(r"rule '([^']+)' can never match", str(exc)))
            if not dead:
                raise
            raw["rules"] = [r for r in raw["rules"] if r["id"] not in dead]


def preload(bootstrap: str, tmpls: Sequence[Template], n: int) -> float:
    """Publish ``n`` events (round robin over the templates); return the seconds it took."""
    producer = make_producer(bootstrap, linger_ms=20, batch_size=256 * 1024)
    started = time.perf_counter()
    now = int(time.time() * 1000)
    for i in range(n):
        t = tmpls[i % len(tmpls)]
        producer.send(t.topic, t.make(str(uuid.uuid4()), now), key=t.key)
    producer.flush(timeout=300)
    producer.close()
    return time.perf_counter() - started


# -- Kafka plumbing -------------------------------------------------------------------------


@dataclass
class Env:
    bootstrap: str
    settings: config.Settings
    topics: Topics
    policy_path: Path
    home: Path

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            SAFESHARE_BOOTSTRAP=self.bootstrap,
            SAFESHARE_NAMESPACE=self.topics.namespace,
            SAFESHARE_HOME=str(self.home),
            SAFESHARE_POLICY=str(self.policy_path),
        )


@contextmanager
def namespace(bootstrap: str, base: config.Settings, policy_path: Path, what: str) -> Iterator[Env]:
    """Fresh topics (deleted afterwards) and a fresh home (keys) for one phase."""
    topics = Topics(f"bench-router-{what}-{uuid.uuid4().hex[:6]}")
    policy = Policy.load(policy_path, field_classes=Codec.default().data_classes())
    specs = standard_topic_specs(
        topics,
        [a.id for a in policy.agencies],
        [s.id for s in policy.subscribers],
        partitions=PARTITIONS,
    )
    specs += [TopicSpec(topics.feed(f"passthrough-{i}"), PARTITIONS) for i in range(3)]
    with tempfile.TemporaryDirectory(prefix="bench-router-") as home, Admin(bootstrap) as admin:
        admin.ensure_topics(specs)
        settings = replace(
            base, namespace=topics.namespace, home=Path(home), policy_path=policy_path
        )
        try:
            yield Env(bootstrap, settings, topics, policy_path, Path(home))
        finally:
            admin.delete_topics([s.name for s in specs])


#: Runs ``safeshare`` with the first argument as the transactional retry pause (ms).
_WITH_TXN_RETRY = (
    "import sys, broker.kafka.producer as p; p.TXN_RETRY_BACKOFF_MS = float(sys.argv.pop(1)); "
    "from broker.cli.main import main; main(sys.argv[1:])"
)


@contextmanager
def router_process(
    env: Env, instance: str, txn_retry_ms: float | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``safeshare route`` as a process; ``txn_retry_ms``: its first pause before a
    transactional retry (default the router's own, TXN_RETRY_BACKOFF_MS)."""
    log = open(env.home / "router.log", "ab")  # noqa: SIM115 - closed below
    args = ["route", "--idle", "0", "--instance", instance]
    if txn_retry_ms is None:
        cmd = [sys.executable, "-m", "broker.cli.main", *args]
    else:
        cmd = [sys.executable, "-c", _WITH_TXN_RETRY, str(txn_retry_ms), *args]
    proc = subprocess.Popen(
        cmd, env=env.env(), stdout=log, stderr=subprocess.STDOUT, cwd=config.PROJECT_ROOT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            tail = (env.home / "router.log").read_text(errors="replace")[-2000:]
            print(f"router exited with {proc.returncode}:\n{tail}", file=sys.stderr)


class Committed:
    """The router group's committed offsets on every ingest partition (never joins the group)."""

    def __init__(self, env: Env) -> None:
        policy = Policy.load(env.policy_path, field_classes=Codec.default().data_classes())
        self._consumer = make_consumer(env.bootstrap, group_id=env.topics.router_group)
        self.tps = [
            TopicPartition(env.topics.ingest(a.id), p)
            for a in policy.agencies
            for p in range(PARTITIONS)
        ]

    def total(self) -> int:
        return sum(self._consumer.committed(tp) or 0 for tp in self.tps)

    def close(self) -> None:
        self._consumer.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- phases ---------------------------------------------------------------------------------


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
        leaves: list[Mapping[str, Any]] = []
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
                deadline_s: float = 600) -> Timeline:
    """Consume each ingest record, produce PASSTHROUGH_COPIES copies; its commits.

    Each copy is sent with kafka-python's own ``KafkaProducer.send`` (the bare
    baseline the issue names), or with ``ours`` through :meth:`Producer.send_all`,
    the router's send path (:class:`broker.kafka._kafka_python.KeyedAppender`), flushed
    and checked before the commit as the router does. The producer's settings
    are the router's either way."""
    topics = env.topics
    mode = ("txn" if transactional else "plain") + ("-ours" if ours else "")
    consumer = make_consumer(
        env.bootstrap,
        group_id=f"{topics.namespace}.passthrough-{mode}",
        pattern=topics.ingest_pattern,
        isolation_level="read_committed",
        max_poll_records=500,
    )
    producer = make_producer(
        env.bootstrap,
        transactional_id=f"{topics.namespace}.passthrough-{mode}" if transactional else None,
        # As the router's producer: a batch's records leave together at the flush.
        linger_ms=PRODUCER_LINGER_MS,
        batch_size=PRODUCER_BATCH_BYTES,
    )
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


def router_in_process(env: Env, n: int) -> tuple[Timeline, Any]:
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
    )
    settle_memory()  # as `safeshare route` does
    stats = service.run(max_events=n, idle_exit_s=60)
    return line, stats


def phase_throughput(bootstrap: str, base: config.Settings, policy: Path, n: int,
                     tmpls: Sequence[Template], rounds: int = 5) -> None:
    """Passthrough and router taking turns, ``rounds`` times, each round on fresh topics:
    the machine's speed drifts by tens of percent over a minute (a shared VM; CPU
    per event too, if less), so a ratio is taken within each round and the median
    of the rounds reported."""
    plains, txns, ours_, rates, ratios, ratios_ours = [], [], [], [], [], []
    cpus: list[tuple[float, float, float]] = []
    for k in range(rounds):
        with namespace(bootstrap, base, policy, f"tput{k}") as env:
            took = preload(bootstrap, [replace_topic(t, env.topics) for t in tmpls], n)
            plain = passthrough(env, n, transactional=False).rate()
            txn_line = passthrough(env, n, transactional=True)
            ours_line = passthrough(env, n, transactional=True, ours=True)
            line, stats = router_in_process(env, n)
            txn, ours, rate = txn_line.rate(), ours_line.rate(), line.rate()
            cpus.append((txn_line.cpu_us(), ours_line.cpu_us(), line.cpu_us()))
            per_event = max(stats.consumed, 1)
            print(f"  round {k + 1}: preloaded {n:,} in {took:.1f} s; passthrough {plain:,.0f}"
                  f" (txn {txn:,.0f}, txn through our send path {ours:,.0f}),"
                  f" router {rate:,.0f} events/s -> {rate / txn:.2f} ({rate / ours:.2f});"
                  f" CPU per event {cpus[-1][0]:.0f} / {cpus[-1][1]:.0f} / {cpus[-1][2]:.0f} us"
                  f" ({stats.shared / per_event:.2f} copies and"
                  f" {(stats.shared + stats.withheld) / per_event:.2f} leaves per event,"
                  f" {stats.transactions} transactions)")
            plains.append(plain)
            txns.append(txn)
            ours_.append(ours)
            rates.append(rate)
            ratios.append(rate / txn)
            ratios_ours.append(rate / ours)
    report("passthrough (no txn), 1 in -> 3 out", statistics.median(plains), "events/s",
           f"median of {rounds}")
    report("passthrough (transactional), 1 in -> 3 out", statistics.median(txns), "events/s")
    report("passthrough (transactional, our send path), 1 in -> 3 out",
           statistics.median(ours_), "events/s")
    report("router (transactional, audited)", statistics.median(rates), "events/s")
    report("router / transactional passthrough", statistics.median(ratios), "ratio",
           f"median of the rounds' ratios ({min(ratios):.2f}-{max(ratios):.2f})")
    cpu_txn, cpu_ours, cpu_router = (statistics.median(c) for c in zip(*cpus, strict=True))
    report("passthrough (transactional), CPU per event", cpu_txn, "us",
           "this process, all threads, over the same window as the rate")
    report("passthrough (transactional, our send path), CPU per event", cpu_ours, "us")
    report("router (transactional, audited), CPU per event", cpu_router, "us")
    by_cpu = [t / r for t, _, r in cpus]
    report("router / transactional passthrough, by CPU", statistics.median(by_cpu), "ratio",
           f"passthrough CPU / router CPU per event, median of the rounds'"
           f" ({min(by_cpu):.2f}-{max(by_cpu):.2f})")
    report("router / transactional passthrough on our send path",
           statistics.median(ratios_ours), "ratio",
           f"the routing work alone: both send alike ({min(ratios_ours):.2f}-"
           f"{max(ratios_ours):.2f})")
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


def replace_topic(t: Template, topics: Topics) -> Template:
    agency = t.topic.rsplit(".", 1)[1]
    return replace(t, topic=topics.ingest(agency))


def latency_settings(txn_retry_ms: float) -> str:
    """The router's settings that the latency depends on, for the report."""
    from kafka import KafkaProducer  # noqa: PLC0415 - the client's own default, as used

    from broker.routing.service import RouterService  # noqa: PLC0415

    retry_ms = KafkaProducer.DEFAULT_CONFIG["retry_backoff_ms"]
    max_batch = inspect.signature(RouterService.__init__).parameters["max_batch"].default
    return (
        f"router: transactional retry pause {txn_retry_ms:g} ms doubling to "
        f"retry_backoff_ms {retry_ms} ms (kafka-python's default, which it "
        f"used to sleep whole), linger_ms {PRODUCER_LINGER_MS}, batch.size "
        f"{PRODUCER_BATCH_BYTES // 1024} KiB, max {max_batch} events a transaction"
    )


def phase_latency(bootstrap: str, base: config.Settings, policy_path: Path,
                  tmpls: Sequence[Template], rate: float, seconds: float,
                  warmup_s: float = 5.0, txn_retry_ms: float = TXN_RETRY_BACKOFF_MS) -> None:
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
                                break
            finally:
                consumer.close()

        with router_process(env, "bench-latency", txn_retry_ms):
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            time.sleep(5)  # the router joins its group meanwhile
            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            loader.join()
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
        print(f"  {latency_settings(txn_retry_ms)}")
        at = f"at {rate:,.0f}/s, txn retry {txn_retry_ms:g} ms"
        report(f"latency {at}, reported_at -> feed, p50", q[49], "ms", note)
        report(f"latency {at}, reported_at -> feed, p99", q[98], "ms")
        report(f"latency {at}, reported_at -> feed, max", lat[-1], "ms")
        if missing:
            print(f"  ({missing} expected events had not arrived 30 s after the load stopped)")


def phase_cycle(bootstrap: str, base: config.Settings, policy: Path,
                tmpls: Sequence[Template], rate: float, seconds: float) -> None:
    """Where a router's loop spends its time at a steady input rate (in process).

    The latency at a steady rate is about one loop: the events that arrived
    during the last one are polled, routed, flushed and committed. Each step of
    the loop is timed on the service object (the load is sent from a thread of
    this process, so it shares the interpreter with the router).
    """
    with namespace(bootstrap, base, policy, "cycle") as env:
        tm = [replace_topic(t, env.topics) for t in tmpls]
        sizes: list[int] = []
        clock = SystemClock()
        service = build_service(
            env.settings, bootstrap, clock=clock, instance_id="bench-cycle",
            core=build_core(env.settings, clock=clock, codec=Codec.default()),
            on_batch=lambda batch: sizes.append(len(batch)),
        )
        spent: dict[str, float] = {}

        def timed(obj: Any, name: str, label: str) -> None:
            inner = getattr(obj, name)

            def run(*a: Any, **k: Any) -> Any:
                started = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

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

        def load() -> None:
            producer = make_producer(bootstrap, linger_ms=2)
            i, next_at, end = 0, time.monotonic(), time.monotonic() + seconds
            while time.monotonic() < end:
                t = tm[i % len(tm)]
                producer.send(t.topic, t.make(str(uuid.uuid4()), int(time.time() * 1000)),
                              key=t.key)
                i += 1
                next_at += 1 / rate
                if (delay := next_at - time.monotonic()) > 0.001:
                    time.sleep(delay)
            producer.flush()
            producer.close()

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        settle_memory()
        service.run(idle_exit_s=3)
        loader.join()
    cycles = max(len(sizes), 1)
    print(f"  {cycles} transactions, {sum(sizes) / cycles:.0f} events each on average")
    for label in [label for _, label in steps] + ["  of which commit"]:
        report(f"loop at {rate:,.0f}/s: {label.strip()}", spent.get(label, 0) / cycles * 1000,
               "ms per transaction")
    pauses = [p.retry_pauses for p in producers if p.retry_pauses is not None]
    if pauses:
        # A retried AddOffsets/AddPartitions (CONCURRENT_TRANSACTIONS while the
        # previous commit completes) pauses the producer's sender thread.
        report(f"loop at {rate:,.0f}/s: transactional retries", pauses[0].count / cycles,
               "per transaction", f"first pause {TXN_RETRY_BACKOFF_MS:g} ms, doubling")
        report(f"loop at {rate:,.0f}/s: paused before transactional retries",
               pauses[0].seconds / cycles * 1000, "ms per transaction")


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


def main(argv: Sequence[str] | None = None) -> None:
    """Every figure. ``argv`` defaults to none (``python -m bench`` calls ``main()``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int,
                    default=int(os.environ.get("SAFESHARE_BENCH_EVENTS") or 100_000))
    ap.add_argument("--throughput-events", type=int, default=20_000)
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
    ap.add_argument("--profile", action="store_true", help="cProfile the routing core")
    ap.add_argument("--only", default="core,send,throughput,latency,cycle,rss")
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
        if not phases & {"txn", "send", "throughput", "latency", "rss", "cycle"}:
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
                phase_throughput(cluster.bootstrap, base, policy, args.throughput_events, tmpls)
            if "latency" in phases:
                for rate in (float(r) for r in args.rates.split(",")):
                    for pause in (float(p) for p in args.txn_retry_ms.split(",")):
                        phase_latency(cluster.bootstrap, base, policy, tmpls, rate,
                                      args.latency_s, txn_retry_ms=pause)
            if "cycle" in phases:
                phase_cycle(cluster.bootstrap, base, policy, tmpls, 1000.0, args.latency_s)
            if "rss" in phases:
                phase_rss(cluster.bootstrap, base, policy, tmpls, args.events)


if __name__ == "__main__":
    main(sys.argv[1:])

