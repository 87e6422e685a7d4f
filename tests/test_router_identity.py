"""The router names the child (issue 13) on a real Kafka: events without a pseudonym.

Police (NHS number), school (UPN, names, date of birth) and the return-home
service (names, date of birth, a familiar form of the given name) publish the
same child: one pseudonym in the MASH feed, derived from the NHS number under
the partnership key. An invalid NHS number never reaches a feed; twins are
never linked; a restarted router rebuilds the identity index from its topic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.identity.pseudonym import PartnershipKeys, version_of
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.signing.feeds import feed_schema
from broker.topics import Topics
from tests.helpers import (
    CODEC,
    create_topics,
    example,
    publish,
    read_all,
    run_router,
    settings_for,
)

pytestmark = pytest.mark.kafka

NHS = "9434765919"
DOB = "2010-03-14"


def _event(name: str, **subject: Any) -> dict[str, Any]:
    e = example(name)
    e["subject"] = {"pseudonym": None, "local_authority": "E06000027",
                    "social_care_status": "LOOKED_AFTER", **subject}  # fmt: skip
    # Shared without consent for the stated reason, so the MASH receives every event.
    e["sharing"] = example("missing_episode")["sharing"]
    return e


def _mash(bootstrap: str, topics: Topics) -> dict[str, tuple[bytes | None, dict[str, Any], bytes]]:
    """event id -> (record key, decoded feed record, bytes) of the MASH feed."""
    out = {}
    for r in read_all(bootstrap, topics.feed("torbay-mash")):
        if feed_schema(CODEC, r.value or b"") != "safeshare.FeedRecord":
            continue  # an identity notice (tests/test_identity_announce.py)
        rec = CODEC.decode(r.value or b"", "safeshare.FeedRecord")
        out[rec["event"]["event_id"]] = (r.key, rec, r.value or b"")
    return out


def _police() -> dict[str, Any]:
    return _event(
        "missing_episode", given_name="James", family_name="Example", date_of_birth=DOB,
        nhs_number=NHS, postcode="TQ1 1AA",
    )  # fmt: skip


def _school() -> dict[str, Any]:
    return _event(
        "education_concern", given_name="James", family_name="Example", date_of_birth=DOB,
        upn="A123456789012",
    )  # fmt: skip


def _return_home() -> dict[str, Any]:
    return _event(
        "return_home_interview", given_name="Jamie", family_name="Example", date_of_birth=DOB
    )


def _one_child(bootstrap: str, topics: Topics, ids: list[str]) -> str:
    """The one pseudonym the MASH received every event of ``ids`` under."""
    mash = _mash(bootstrap, topics)
    assert set(ids) <= set(mash)
    want = mash[ids[0]][1]["event"]["subject"]["pseudonym"]
    assert version_of(want) == 1
    for eid in ids:
        key, rec, data = mash[eid]
        assert rec["event"]["subject"]["pseudonym"] == want
        assert key == want.encode()
        # The copy carries the router's pseudonym, written as the codec writes it.
        assert CODEC.encode(rec, "safeshare.FeedRecord") == data
    return want


def test_one_child_across_police_school_and_return_home_is_one_pseudonym(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    events = [_police(), _school(), _return_home()]
    publish(kafka_bootstrap, topics, "devon-cornwall-police", events[0])
    publish(kafka_bootstrap, topics, "example-academy", events[1])
    publish(kafka_bootstrap, topics, "safe-return-charity", events[2])
    routed = run_router(kafka_bootstrap, s)
    # Which arrives first is up to the router's consumer: that one is the NEW child.
    assert sorted(str(r.identity) for r in routed) == ["LINK", "LINK", "NEW"]
    _one_child(kafka_bootstrap, topics, [e["event_id"] for e in events])
    # The index record went with the shares, sealed: no name or number in clear.
    index = read_all(kafka_bootstrap, topics.identity)
    assert len(index) == 3
    raw = b"".join(r.value or b"" for r in index)
    for clear in (b"James", b"Example", NHS.encode(), b"A123456789012"):
        assert clear not in raw


def test_a_restarted_router_rebuilds_the_index_and_links_the_same_way(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    police, school, rhi = _police(), _school(), _return_home()
    publish(kafka_bootstrap, topics, "devon-cornwall-police", police)
    assert [r.identity for r in run_router(kafka_bootstrap, s)] == ["NEW"]
    # The first event names the child by its NHS number: HMAC under the partnership key.
    want = PartnershipKeys.load(s.partnership_keys_dir).of_nhs_number(NHS)
    assert _one_child(kafka_bootstrap, topics, [police["event_id"]]) == want
    # Each run is a new process: its index holds only what it reads back from the topic.
    publish(kafka_bootstrap, topics, "example-academy", school)
    assert [r.identity for r in run_router(kafka_bootstrap, s)] == ["LINK"]
    publish(kafka_bootstrap, topics, "safe-return-charity", rhi)
    assert [r.identity for r in run_router(kafka_bootstrap, s)] == ["LINK"]
    ids = [police["event_id"], school["event_id"], rhi["event_id"]]
    assert _one_child(kafka_bootstrap, topics, ids) == want


def test_twins_with_one_surname_birth_date_and_address_are_never_linked(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    twin = {"family_name": "Example", "date_of_birth": DOB, "postcode": "TQ1 1AA",
            "address": "Flat 2, 1 Example Terrace, Torquay"}  # fmt: skip
    a = _event("missing_episode", given_name="Amelia", **twin)
    b = _event("missing_episode", given_name="Oliver", **twin)
    publish(kafka_bootstrap, topics, "devon-cornwall-police", a, b)
    routed = run_router(kafka_bootstrap, s)
    assert "LINK" not in [r.identity for r in routed]
    mash = _mash(kafka_bootstrap, topics)
    pa = mash[a["event_id"]][1]["event"]["subject"]["pseudonym"]
    pb = mash[b["event_id"]][1]["event"]["subject"]["pseudonym"]
    assert pa and pb and pa != pb


def test_an_invalid_nhs_number_never_reaches_a_feed(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    e = _police()
    data = CODEC.encode(CODEC.from_json(e))
    bad = data.replace(NHS.encode(), b"9434765918")  # check digit wrong
    assert bad != data
    prod = make_producer(kafka_bootstrap)
    prod.send(topics.ingest("devon-cornwall-police"), bad)
    prod.flush()
    prod.close()
    run_router(kafka_bootstrap, s)
    quarantined = [
        CODEC.decode(r.value or b"", "safeshare.QuarantineRecord")
        for r in read_all(kafka_bootstrap, topics.quarantine)
    ]
    assert len(quarantined) == 1 and quarantined[0]["original"] == bad
    assert "nhs_number" in quarantined[0]["detail"] and "9434765918" not in quarantined[0]["detail"]
    assert _mash(kafka_bootstrap, topics) == {}
    assert read_all(kafka_bootstrap, topics.identity) == []
