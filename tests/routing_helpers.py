"""Helpers shared by the routing tests: example events, settings, running a router."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from broker import config
from broker.clock import SystemClock
from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.kafka.configuration import standard_topic_specs
from broker.kafka.consumer import make_consumer
from broker.kafka.structs import Record
from broker.policy import Policy
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
from broker.topics import Topics

EVENTS = Path(__file__).parent / "data" / "events"
CODEC = Codec.default()


def example(name: str, **changes: Any) -> dict[str, Any]:
    """An example event (JSON form) with a fresh event id."""
    obj: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    obj["event_id"] = str(uuid.uuid4())
    for key, value in changes.items():
        obj[key] = value
    return copy.deepcopy(obj)


def settings_for(topics: Topics, home: Path) -> config.Settings:
    return replace(config.load(), namespace=topics.namespace, home=home)


def create_topics(admin: Admin, s: config.Settings) -> Policy:
    policy = Policy.load(s.policy_path, field_classes=CODEC.data_classes())
    admin.ensure_topics(
        standard_topic_specs(
            s.topics,
            [a.id for a in policy.agencies],
            [x.id for x in policy.subscribers],
            partitions=2,
        )
    )
    return policy


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
