"""The identity review page's data, on the real broker: one read of the team's
desk topics per page load (items and decisions together, one consumer), and
what the team holds of each child looked up in the feed store's index (never a
scan of every record per item). The full page, with router and workspace, is
tests/test_workspace_identity.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import broker.identity.desk as desk_module
from broker.identity.desk import REVIEW_ITEM
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.topics import Topics
from broker.workspace import Workspace, WorkspaceConfig
from broker.workspace.identity import _items
from tests.helpers import CODEC, create_topics, settings_for

MASH = "torbay-mash"


def _review(i: int) -> dict[str, Any]:
    return {"review_id": f"r{i}", "event_id": f"e{i}", "source_agency": "safe-return-charity",
            "provisional": f"prov{i}", "candidate": f"cand{i}", "match_probability": 0.7,
            "raised_at": 1_760_000_000_000 + i}


def _record(event_id: str, pseudonym: str, occurred: int) -> dict[str, Any]:
    return {"event": {"event_id": event_id, "risk_level": "LOW", "occurred_at": occurred,
                      "subject": {"pseudonym": pseudonym}}, "decision": {}}


@pytest.mark.kafka
def test_a_review_page_reads_the_desk_once_and_knows_what_the_team_holds(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = create_topics(admin, settings_for(topics, tmp_path))
    with make_producer(kafka_bootstrap, linger_ms=0) as p:
        for i in range(3):
            p.send(topics.identity_reviews(MASH), CODEC.encode(_review(i), REVIEW_ITEM),
                   key=str(uuid.uuid4()).encode()).get()
    ws = Workspace(WorkspaceConfig(users={}, bootstrap=kafka_bootstrap, topics=topics,
                                   policy=policy), CODEC)
    made: list[object] = []
    real = desk_module.make_consumer

    def counted(*args: Any, **kw: Any) -> Any:
        made.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(desk_module, "make_consumer", counted)
    try:
        ws.identity_desk(MASH).keep_apart("cand1", "prov1", decided_by="sam", review_id="r1")
        store = ws.store(MASH)
        store.add_records([("feed", 0, 0, _record("e0", "cand0", 1_767_312_000_000))])
        store.add_records([("feed", 0, 1, _record("e9", "prov2", 1_767_225_600_000)),
                           ("feed", 0, 2, _record("e8", "cand0", 1_767_225_600_000))])
        made.clear()
        items = _items(ws, MASH)
        assert len(made) == 1  # items and decisions in one read
        assert [(i["review_id"], i["received"], i["provisional_held"], i["candidate_held"])
                for i in items] == [("r2", False, True, False), ("r0", True, False, True)]
        # The index keeps the chronology as it was: in the order things happened.
        assert [e.event_id for e in store.chronology("cand0")] == ["e8", "e0"]
        assert store.chronology("nobody") == [] and not store.holds("nobody")
    finally:
        ws.close()
