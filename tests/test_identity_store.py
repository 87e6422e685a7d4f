"""The identity index on its compacted topic: sealed, and rebuilt the same after a restart."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from broker.identity.exceptions import IdentityError
from broker.identity.linkage import LINK, Features, Index, Model
from broker.identity.pseudonym import PartnershipKeys
from broker.identity.store import IndexSealer, entry, rebuild
from broker.kafka.admin import Admin
from broker.kafka.configuration import CHANGELOG_CONFIG, TopicSpec
from broker.kafka.consumer import make_consumer
from broker.kafka.producer import make_producer
from broker.topics import Topics

DOB = date(2011, 3, 14)
JESSICA = Features.of(given="Jessica", family="Example", dob=DOB, postcode="TQ1 4AB",
                      nhs="9434765919")


def test_a_sealed_entry_opens_only_under_its_own_pseudonym(tmp_path: Path) -> None:
    keys = PartnershipKeys.load(tmp_path, create=True)
    sealer = IndexSealer(keys)
    value = sealer.seal("v1:a", [JESSICA])
    assert b"Jessica" not in value and b"9434765919" not in value
    assert sealer.open("v1:a", value) == [JESSICA]
    with pytest.raises(IdentityError, match="does not open"):
        sealer.open("v1:b", value)
    # After a rotation old entries still open; new ones are sealed under v2.
    rotated = IndexSealer(PartnershipKeys.rotate(tmp_path))
    assert rotated.open("v1:a", value) == [JESSICA]
    assert rotated.seal("v1:a", [JESSICA])[4:6] == (2).to_bytes(2, "big")


def test_which_records_are_tentative_is_sealed_with_them(tmp_path: Path) -> None:
    """A record an unsure link brought stays tentative after a restart (it is no
    evidence for another automatic link, broker/identity/linkage.py)."""
    sealer = IndexSealer(PartnershipKeys.load(tmp_path, create=True))
    index = Index(Model.default())
    index.add("v1:a", JESSICA)
    index.add("v1:a", Features.of(given="Jess", family="Example", dob=DOB), 0.95)
    key, value = entry(sealer, index, "v1:a")
    assert value is not None
    opened = sealer.open_full("v1:a", value)
    assert opened.tentative == [1]
    rebuilt = Index(Model.default())
    opened.add_to(rebuilt, "v1:a")
    assert rebuilt.records == index.records and rebuilt.tentative_of("v1:a") == [1]


@pytest.mark.kafka
def test_a_restarted_router_rebuilds_the_index_and_links_the_same_way(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    admin.ensure_topics([TopicSpec(topics.identity, 2, CHANGELOG_CONFIG)])
    keys = PartnershipKeys.load(tmp_path, create=True)
    sealer = IndexSealer(keys)
    before = Index(Model.default())
    child = keys.of_nhs_number("9434765919")
    before.add(child, JESSICA)
    before.add(child, Features.of(given="Jess", family="Example", dob=DOB))
    twin = keys.pseudonym("child", "anchor-twin")
    before.add(twin, Features.of(given="Amelia", family="Example", dob=DOB, postcode="TQ1 4AB"))
    gone = keys.pseudonym("child", "anchor-gone")
    before.add(gone, Features.of(given="Noah", family="Pascoe", dob=date(2012, 1, 2)))
    producer = make_producer(kafka_bootstrap)
    for p in (child, twin, gone):
        key, value = entry(sealer, before, p)
        producer.send(topics.identity, value, key=key)
    producer.send(topics.identity, None, key=gone.encode())  # forgotten (unlinked, merged)
    producer.flush()
    producer.close()

    after = Index(Model.default())
    consumer = make_consumer(kafka_bootstrap, group_id=None)
    try:
        assert rebuild(consumer, topics.identity, after, IndexSealer(keys)) == 2
    finally:
        consumer.close()
    assert after.records == {child: before.records[child], twin: before.records[twin]}
    probes = [
        Features.of(given="Jessica", family="Example", dob=DOB, upn="A123456789012"),
        Features.of(given="Jess", family="Example", dob=DOB),
        Features.of(given="Amelia", family="Example", dob=DOB, postcode="TQ1 4AB"),
        Features.of(given="Noah", family="Pascoe", dob=date(2012, 1, 2)),
        Features.of(nhs="9434765919"),
    ]
    for f in probes[:3] + probes[4:]:
        assert after.match(f) == before.match(f)
    assert after.match(probes[4]).decision == LINK and after.match(probes[4]).pseudonym == child
    assert after.match(probes[3]).pseudonym != gone
