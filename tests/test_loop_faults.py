"""The loop service killed at random moments (SIGKILL) while clocks fall due:
no deadline is lost and none escalates twice (real broker, real process)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from broker.clock import FixedClock
from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.kafka.configuration import TopicSpec, loop_topic_specs
from broker.kafka.local import LocalKafka
from broker.kafka.producer import make_producer
from broker.loop.core import CLOCK_RECORD, NOTICE
from broker.loop.rules import parse_clock_policy
from broker.loop.service import LoopService
from broker.topics import Topics
from tests.helpers import read_all
from tests.router_load import wait_for

pytestmark = pytest.mark.kafka

CODEC = Codec.default()
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "policy" / "example-mash.yaml"
CLOCKS = 40
KILLS = 4


def _policy(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "  tier_gap_hours: 4 ", "  tier_gap: 3s "
    )
    assert "tier_gap: 3s" in text
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_loop_service_killed_at_random_moments_loses_no_deadline_and_repeats_none(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    admin.ensure_topics(
        loop_topic_specs(topics, ["police"], ["mash", "mgr", "head"], partitions=3)
        + [TopicSpec(topics.quarantine, 1), TopicSpec(topics.audit, 1)]
    )
    rng = random.Random(7)
    start = time.time_ns() // 1_000_000 + 2_000
    producer = make_producer(kafka_bootstrap)
    for i in range(CLOCKS):
        due = start + rng.randrange(0, 15_000)
        record = {
            "clock_id": f"TRIAGE_RED:e{i}:mash", "kind": "TRIAGE_RED", "event_id": f"e{i}",
            "subject": "ab" * 32, "owner": "mash", "referrer": "police",
            "started_at": due - 4 * 3_600_000, "due_at": due, "escalate_to": ["mgr", "head"],
            "status": "OPEN", "tiers_escalated": 0, "stopped_at": None, "stopped_by": None,
        }
        producer.send(topics.clock_starts, CODEC.encode(record, CLOCK_RECORD),
                      key=f"e{i}".encode())
    producer.flush()
    producer.close()

    env = {**os.environ, "SAFESHARE_BOOTSTRAP": kafka_bootstrap,
           "SAFESHARE_NAMESPACE": topics.namespace, "SAFESHARE_POLICY": str(_policy(tmp_path)),
           "SAFESHARE_HOME": str(tmp_path / "home")}
    log_path = tmp_path / "loop.log"

    def launch() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "broker.cli.main", "loop", "serve", "--instance", "l0",
                 "--metrics-port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def notices() -> list[dict]:
        got = []
        for who in ("mgr", "head"):
            got += [CODEC.decode(r.value or b"", NOTICE)
                    for r in read_all(kafka_bootstrap, topics.notices(who), timeout_s=0.5)]
        return got

    proc = launch()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(2.0, 5.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = launch()
        wait_for("every clock to escalate both tiers",
                 lambda: len(notices()) >= 2 * CLOCKS, timeout_s=120, poll_s=1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    got = notices()
    counts = Counter((n["event_id"], n["tier"], n["recipient"]) for n in got)
    expected = {(f"e{i}", t, r) for i in range(CLOCKS) for t, r in ((1, "mgr"), (2, "head"))}
    assert set(counts) == expected, "a deadline was lost or sent to the wrong tier"
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]


def test_clocks_survive_a_broker_crash_and_escalate_once_when_it_returns(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = own_broker.status().bootstrap  # type: ignore[union-attr]
    topics = Topics("crash")
    with Admin(bootstrap) as admin:
        admin.ensure_topics(loop_topic_specs(topics, ["police"], ["mash", "mgr"], partitions=2)
                            + [TopicSpec(topics.quarantine, 1), TopicSpec(topics.audit, 1)])
    t0 = 1_796_000_000_000
    clock = FixedClock(t0)
    producer = make_producer(bootstrap)
    for i in range(10):
        record = {
            "clock_id": f"TRIAGE_RED:c{i}:mash", "kind": "TRIAGE_RED", "event_id": f"c{i}",
            "subject": "ab" * 32, "owner": "mash", "referrer": "police", "started_at": t0,
            "due_at": t0 + 3_600_000 + i * 60_000, "escalate_to": ["mgr"], "status": "OPEN",
            "tiers_escalated": 0, "stopped_at": None, "stopped_by": None,
        }
        producer.send(topics.clock_starts, CODEC.encode(record, CLOCK_RECORD),
                      key=f"c{i}".encode())
    producer.flush()
    producer.close()
    loop = LoopService(bootstrap, topics=topics, codec=CODEC, policy=parse_clock_policy(None),
                       clock=clock, instance_id="crash")
    try:
        deadline = time.monotonic() + 60
        while len(list(loop.core.open_clocks())) < 10:
            assert time.monotonic() < deadline, "the loop service did not take the clocks"
            loop.run_once(wait_ms=300)
        clock.set(t0 + 3_600_000 + 4 * 60_000)  # the first five fall due...
        loop.run_once(wait_ms=100)
        own_broker.stop(timeout_s=0)  # ...and the broker crashes (SIGKILL)
        clock.set(t0 + 2 * 3_600_000)  # all ten fall due while it is down
        loop.run_once(wait_ms=100)  # fails, aborts, backs off: never raises
        assert loop.last_error is not None
        own_broker.start()
        deadline = time.monotonic() + 120
        while not (loop.last_error is None and loop.stats.escalations >= 10):
            assert time.monotonic() < deadline, f"no recovery: {loop.last_error}"
            loop.run_once(wait_ms=300)
    finally:
        loop.close()
    got = [CODEC.decode(r.value or b"", NOTICE)
           for r in read_all(bootstrap, topics.notices("mgr"), timeout_s=2.0)]
    counts = Counter(n["event_id"] for n in got)
    assert set(counts) == {f"c{i}" for i in range(10)}, "a deadline was lost"
    assert max(counts.values()) == 1, counts
