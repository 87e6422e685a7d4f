"""The router benchmark's load and Kafka plumbing, shared by its phases.

Example events as byte templates whose event id and ``reported_at`` are patched
in place (so the load costs almost nothing to make), the benchmark's cut-down
policy, a fresh topic namespace per phase, the router as a process, and its
group's committed offsets. See bench/bench_router.py for the figures.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker import config  # noqa: E402
from broker.codec import Codec, long_bytes  # noqa: E402
from broker.kafka.admin import Admin  # noqa: E402
from broker.kafka.configuration import TopicSpec, standard_topic_specs  # noqa: E402
from broker.kafka.consumer import make_consumer  # noqa: E402
from broker.kafka.producer import make_producer  # noqa: E402
from broker.kafka.structs import TopicPartition  # noqa: E402
from broker.policy import Policy  # noqa: E402
from broker.policy.exceptions import PolicyError  # noqa: E402
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
    policy_path = config.load().policy_path
    assert policy_path is not None, "no policy configured"
    raw = yaml.safe_load(policy_path.read_text())
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


def transactions_v2_in_use(bootstrap: str) -> bool:
    """Whether a transactional producer made here uses transactions v2 (the
    cluster has them and broker.kafka.configuration.TRANSACTIONS_V2 is on)."""
    with make_producer(bootstrap, transactional_id="bench-v2-probe") as probe:
        return probe.transactions_v2


#: Runs ``safeshare`` with the first argument as the transactional retry pause (ms)
#: ("-": the router's own), the second as how it subscribes ("name": the
#: topics its policy names, as shipped; "regex": every topic matching its pattern)
#: and the third as its transaction protocol ("v2": as shipped, when the cluster
#: has it; "v1": kafka-python's own).
_ROUTER = (
    "import sys, broker.kafka.producer as p, broker.routing.app as a; "
    "import broker.kafka.configuration as c; "
    "pause, how, txn = sys.argv.pop(1), sys.argv.pop(1), sys.argv.pop(1)\n"
    "if pause != '-': p.TXN_RETRY_BACKOFF_MS = float(pause)\n"
    "c.TRANSACTIONS_V2 = txn == 'v2'\n"
    "if how == 'regex':\n"
    "    build = a.build_service\n"
    "    a.build_service = lambda *x, **k: build(*x, source_topics=None, **k)\n"
    "from broker.cli.main import main; main(sys.argv[1:])"
)


@contextmanager
def router_process(
    env: Env, instance: str, txn_retry_ms: float | None = None, sources: str = "name",
    transactions: str = "v2",
) -> Iterator[subprocess.Popen[bytes]]:
    """``safeshare route`` as a process; ``txn_retry_ms``: its first pause before a
    transactional retry (default the router's own, TXN_RETRY_BACKOFF_MS);
    ``sources``: "name" (as shipped) or "regex" (broker/routing/sources.py);
    ``transactions``: "v2" (as shipped) or "v1" (kafka-python's own protocol)."""
    log = open(env.home / "router.log", "ab")  # noqa: SIM115 - closed below
    args = ["route", "--idle", "0", "--instance", instance]
    pause = "-" if txn_retry_ms is None else str(txn_retry_ms)
    cmd = [sys.executable, "-c", _ROUTER, pause, sources, transactions, *args]
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


def replace_topic(t: Template, topics: Topics) -> Template:
    agency = t.topic.rsplit(".", 1)[1]
    return replace(t, topic=topics.ingest(agency))


def steady_load(bootstrap: str, namespace: str, rate: float, seconds: float) -> None:
    """Send the templates' events to ``namespace``'s ingest topics at ``rate`` per
    second for ``seconds`` (run in a process of its own)."""
    tmpls = templates(Codec.default(), Topics(namespace))
    producer = make_producer(bootstrap, linger_ms=2)
    i, next_at, end = 0, time.monotonic(), time.monotonic() + seconds
    while time.monotonic() < end:
        t = tmpls[i % len(tmpls)]
        producer.send(t.topic, t.make(str(uuid.uuid4()), int(time.time() * 1000)), key=t.key)
        i += 1
        next_at += 1 / rate
        if (delay := next_at - time.monotonic()) > 0.001:
            time.sleep(delay)
    producer.flush()
    producer.close()
