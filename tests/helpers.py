"""The tests' shared helpers, in one place: example events, settings, topics, running
a router, waiting on a condition, reading a topic and reading the audit leaves.

Test modules import from here (or ``router_load``, ``codec_strategies``,
``policy_helpers``), never from one another.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from broker import config
from broker.api import Publisher
from broker.audit.leaf import AuditLeaf, decode_batch
from broker.clock import SystemClock
from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.kafka.configuration import standard_topic_specs
from broker.kafka.consumer import Consumer, make_consumer
from broker.kafka.structs import Record, TopicPartition
from broker.policy import Policy
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
from broker.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).parent / "data" / "events"
CODEC = Codec.default()


def example(name: str, **changes: Any) -> dict[str, Any]:
    """An example event (JSON form) with a fresh event id."""
    obj: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    obj["event_id"] = str(uuid.uuid4())
    for key, value in changes.items():
        obj[key] = value
    return copy.deepcopy(obj)


def publish(bootstrap: str, topics: Topics, agency: str, *events: dict[str, Any]) -> None:
    """Publish ``events`` (JSON form) as ``agency``, in order, through the public API."""
    with Publisher(bootstrap=bootstrap, agency=agency, topics=topics) as p:
        for e in events:
            p.publish_json(e)


def settings_for(topics: Topics, home: Path) -> config.Settings:
    return replace(config.load(), namespace=topics.namespace, home=home)


def create_topics(admin: Admin, s: config.Settings) -> Policy:
    policy = Policy.load(s.policy_file(), field_classes=CODEC.data_classes())
    admin.ensure_topics(
        standard_topic_specs(
            s.topics,
            [a.id for a in policy.agencies],
            [x.id for x in policy.subscribers],
            partitions=2,
        )
    )
    return policy


def own_namespace(
    bootstrap: str, home: Path, prefix: str = "r"
) -> tuple[Topics, config.Settings, Policy]:
    """A fresh namespace on a broker of the test's own (``own_broker``; the ``topics``
    fixture's cleanup is for the session's broker): its settings with ``home``, the
    policy they name, and that policy's topics created."""
    topics = Topics(f"{prefix}{uuid.uuid4().hex[:8]}")
    s = settings_for(topics, home)
    with Admin(bootstrap) as admin:
        policy = create_topics(admin, s)
    return topics, s, policy


def run_router(bootstrap: str, s: config.Settings, *, idle_s: float = 2.0) -> list[Routed]:
    routed: list[Routed] = []
    clock = SystemClock()
    service = build_service(
        s,
        bootstrap,
        clock=clock,
        instance_id=f"test-{uuid.uuid4().hex[:6]}",
        core=build_core(s, clock=clock, codec=CODEC),
        on_batch=routed.extend,
    )
    service.run(idle_exit_s=idle_s)
    return routed


def read_all(bootstrap: str, topic: str, *, timeout_s: float = 3.0) -> list[Record]:
    """Every committed record of ``topic`` (waits until ``timeout_s`` without news)."""
    consumer = make_consumer(bootstrap, group_id=None, topics=[topic])
    try:
        out: list[Record] = []
        while True:
            got = consumer.collect(1_000_000, timeout_s=timeout_s)
            if not got:
                return out
            out.extend(got)
            timeout_s = 1.0
    finally:
        consumer.close()


def read_to_end(bootstrap: str, topic: str, *, committed: bool = True) -> list[Record]:
    """Every committed (or every) record of ``topic``, read up to its end offsets.

    No waiting for silence: a read_committed reader's end is the last stable
    offset, so an open transaction's records are not waited for.
    """
    consumer = make_consumer(
        bootstrap,
        group_id=None,
        max_poll_records=10_000,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Record] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            out.extend(consumer.poll_records(timeout_ms=200))
        return out
    finally:
        consumer.close()


def collect_then_settle(
    consumer: Consumer, expected: int, *, settle_s: float = 1.0
) -> list[Record]:
    """Read ``expected`` records (30 s at most), then poll ``settle_s`` more for extras
    (a record that should not be there has that long to show)."""
    got = consumer.collect(expected, timeout_s=30)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        got.extend(consumer.poll_records(timeout_ms=200))
    return got


def read_leaves(bootstrap: str, topics: Topics, *, to_end: bool = False) -> list[AuditLeaf]:
    """Every committed audit leaf of the namespace, in log order: read until the log
    is quiet (:func:`read_all`), or with ``to_end`` up to its end offsets
    (:func:`read_to_end`, once no router runs)."""
    records = read_to_end(bootstrap, topics.audit) if to_end else read_all(bootstrap, topics.audit)
    return [AuditLeaf.from_bytes(b) for r in records for b in decode_batch(r.value or b"")]


def wait_for(
    what: str, cond: Callable[[], bool], timeout_s: float = 60.0, poll_s: float = 0.1
) -> None:
    """Return once ``cond()`` holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def safeshare(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``safeshare`` command of this checkout (``env`` added to ours)."""
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=120,
    )
