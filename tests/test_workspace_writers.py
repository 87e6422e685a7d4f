"""The workspace's writers (a team's acknowledger, the owner notifier) outlive a
record the broker refuses for good: kafka-python 3.0.12's idempotent producer
then fails every later record too, so without a replacement every later triage
(or consultation notice) failed until a restart. Against the real broker: the
topic's message limit is lowered until a write is refused, then restored, and
the next write must land."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from broker.errors import SafeshareError
from broker.kafka.admin import Admin
from broker.loop.core import ACKNOWLEDGEMENT, NOTICE
from broker.topics import Topics
from broker.workspace import Workspace, WorkspaceConfig
from broker.workspace.notify import Read
from tests.helpers import CODEC, create_topics, read_all, settings_for, wait_for

MASH = "torbay-mash"
HOSPITAL = "torbay-hospital"
DEFAULT_LIMIT = "1048588"


def _refused_then_restored(admin: Admin, topic: str, write: Callable[[str], bool]) -> None:
    """Lower ``topic``'s limit until ``write`` is refused, then restore it (the
    probes written before the new limit took hold land as usual)."""
    admin.alter_topic_config(topic, {"max.message.bytes": "64"})
    wait_for(f"the broker to refuse a write to {topic}", lambda: not write("probe"),
             timeout_s=30)
    admin.alter_topic_config(topic, {"max.message.bytes": DEFAULT_LIMIT})


@pytest.mark.kafka
def test_a_triage_after_a_refused_one_is_recorded(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    policy = create_topics(admin, settings_for(topics, tmp_path))
    ws = Workspace(WorkspaceConfig(users={}, bootstrap=kafka_bootstrap, topics=topics,
                                   policy=policy), CODEC)

    def triaged(event_id: str) -> bool:
        try:
            ws.acknowledger(MASH).acknowledge(event_id, "TRIAGE", actor="sw-1", rag="RED")
        except SafeshareError:
            return False
        return True

    try:
        assert triaged("before")
        first = ws.acknowledger(MASH)
        _refused_then_restored(admin, topics.acks(MASH), triaged)
        assert first.broken
        wait_for("a triage to be recorded again", lambda: triaged("after"), timeout_s=30)
        assert ws.acknowledger(MASH) is not first
    finally:
        ws.close()
    written = [CODEC.decode(r.value or b"", ACKNOWLEDGEMENT)["event_id"]
               for r in read_all(kafka_bootstrap, topics.acks(MASH), timeout_s=1.0)]
    assert {"before", "after"} <= set(written)


@pytest.mark.kafka
def test_an_owner_is_told_of_a_consultation_after_a_refused_notice(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    policy = create_topics(admin, settings_for(topics, tmp_path))
    ws = Workspace(WorkspaceConfig(users={}, bootstrap=kafka_bootstrap, topics=topics,
                                   policy=policy), CODEC)
    audited: list[str] = []

    def told(event_id: str) -> bool:
        try:
            ws.notifier().consulted(MASH, "SAFEGUARDING", [Read(event_id, HOSPITAL, ["health"])],
                                    lambda leaves: audited.extend(x.event_id for x in leaves))
        except SafeshareError:
            return False
        return True

    try:
        assert told("before")
        first = ws.notifier()
        _refused_then_restored(admin, topics.status(HOSPITAL), told)
        assert first.broken
        wait_for("the owner to be told again", lambda: told("after"), timeout_s=30)
    finally:
        ws.close()
    notices = [CODEC.decode(r.value or b"", NOTICE)["event_id"]
               for r in read_all(kafka_bootstrap, topics.status(HOSPITAL), timeout_s=1.0)]
    assert {"before", "after"} <= set(notices)
    assert sorted(audited) == sorted(notices)  # each notice written audited, no other
