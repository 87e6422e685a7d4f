"""What the workspace's pages show of a record, without Kafka: a withheld field
is shown as withheld with its data class and rule and its value never appears,
even if a record carried one; a pattern alert links to its evidence."""

from __future__ import annotations

import uuid
from typing import Any

from broker.codec import Codec
from broker.workspace.render import Workspace, WorkspaceConfig, latest_versions, queue_rows
from broker.workspace.sessions import User
from broker.workspace.store import Entry
from tests.helpers import example

CODEC = Codec.default()
USER = User("dana", "example-academy-dsl", "Dana", "x")
FEED_RECORD = "safeshare.FeedRecord"


def entry(name: str, redacted: list[str], **changes: Any) -> Entry:
    ev = example(name, **changes)
    rec = {"decision": {"subscriber": USER.subscriber, "rule_id": "school-told",
                        "lawful_basis": "UK GDPR Art 6(1)(e)", "policy_digest": "0" * 64,
                        "data_classes_shared": ["pseudonym", "concern_summary"],
                        "fields_redacted": redacted, "obligations": [], "decided_at": 1},
           "event": CODEC.from_json(ev)}
    return Entry(0, "feed", 0, 7, CODEC.decode(CODEC.encode(rec, FEED_RECORD), FEED_RECORD),
                 "RED")


def test_a_withheld_field_is_named_with_its_class_and_rule_and_its_value_never_shown() -> None:
    ws = Workspace(WorkspaceConfig(users={}, bootstrap="unused:9092"), CODEC)
    # The router blanks withheld fields; here the record still carries them.
    e = entry("missing_episode", ["payload.MissingEpisode.found.place", "reporter.name"])
    found = e.event["payload"][1]["found"]["place"]
    reporter = e.event["reporter"]["name"]
    html = ws.render("event.html", user=USER, e=ws.view(e, USER), rags=("RED",), outcomes=("",),
                     purpose="SAFEGUARDING", done=None, csrf="t")
    assert found not in html and reporter not in html
    assert "payload.MissingEpisode.found.place" in html and "(location)" in html
    assert "rule school-told" in html
    assert "payload.MissingEpisode.last_seen.place" in html  # shared fields are shown
    chron = ws.render("chronology.html", user=USER, pseudonym="p", purpose="SAFEGUARDING",
                      events=[ws.view(e, USER, fields=False)], csrf="t")
    assert found not in chron and "reporter.name (referrer)" in chron


def test_a_pattern_alert_links_to_each_concern_it_rests_on() -> None:
    ws = Workspace(WorkspaceConfig(users={}, bootstrap="unused:9092"), CODEC)
    e = entry("pattern_alert", [], event_id=str(uuid.uuid4()))
    evidence = e.event["payload"][1]["evidence"]
    assert len(evidence) >= 2
    received = set(evidence[1:])  # the first concern was not shared with this team
    html = ws.render("alerts.html", user=USER, alerts=[ws.alert(e, USER, received.__contains__)],
                     csrf="t")
    for ev in received:
        assert f'href="/workspace/events/{ev}"' in html
    assert f'href="/workspace/events/{evidence[0]}"' not in html
    assert f"Concern {evidence[0]} <span class=\"muted\">(not shared with your team)" in html


def _version(alert_id: str, version: int, seq: int) -> Entry:
    e = entry("pattern_alert", [], event_id=str(uuid.uuid4()))
    e.event["payload"][1].update(alert_id=alert_id, version=version)
    e.seq = seq
    return e


def test_the_queue_and_alerts_page_show_an_alert_once_at_its_newest_version() -> None:
    """Each update of an alert is a record of its own; the team sees one row per
    alert, naming its newest version, whatever order the records were read in."""
    ws = Workspace(WorkspaceConfig(users={}, bootstrap="unused:9092"), CODEC)
    a1, b1, a3, a2 = (_version("pattern-a", 1, 0), _version("pattern-b", 1, 1),
                      _version("pattern-a", 3, 2), _version("pattern-a", 2, 3))
    concern = entry("missing_episode", [])
    concern.seq = 4
    rows = queue_rows(ws, [a1, b1, a3, a2, concern], USER)
    assert sorted((r["alert"] or "-", r["version"] or 0) for r in rows) == [
        ("-", 0), ("pattern-a", 3), ("pattern-b", 1)]
    html = ws.render("_row.html", row=next(r for r in rows if r["alert"] == "pattern-a"))
    assert 'data-alert="pattern-a"' in html and "alert version 3" in html
    assert [e.event_id for e in latest_versions([a1, b1, a3, a2])] == [b1.event_id, a3.event_id]
