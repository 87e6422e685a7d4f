"""Who is told of a link or unlink, and what the notice says (no Kafka).

The real-broker scene (a crash, a fenced zombie, a sealed feed) is
tests/test_identity_announce.py; here the routing core and the identity index
alone: the recipients each child's index entry keeps, through a link, an
unlink, an abort and a rebuild, and the notices a decision writes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from broker.clock import FixedClock
from broker.gateway.feeds import item_of
from broker.identity.linkage import Thresholds
from broker.kafka.structs import Record
from broker.policy import ConsentStore, Policy
from broker.routing.core import Outbound, Routed, RoutingCore
from broker.routing.identity import IndexRecord, SubjectIdentity
from broker.routing.identity_notices import NOTICE, notice_id
from broker.signing.feeds import is_sealed
from tests.helpers import CODEC
from tests.test_feed_encryption import MASH, entry, keyring, policy_with_feed_keys
from tests.test_routing_consent_identity import NOW, POLICY, T, _decision, _index_keys
from tests.test_routing_identity import _anonymous, _identity, _subject

JAMIE, SAM = "9434765919", "9434765870"
RHI = "safe-return-rhi"


def _core(tmp_path: Path, text: str | None = None) -> RoutingCore:
    """The example policy (or ``text``), but the return-home interviewers never see
    the pseudonym: their copies are keyed by an opaque digest of it."""
    grant = "    data_classes: [pseudonym, identity, concern_summary, location]\n"
    text = text or POLICY.read_text()
    assert text.count(grant) == 1
    text = text.replace(grant, grant.replace("pseudonym, ", ""))
    return RoutingCore(
        codec=CODEC, decider=Policy.from_text(text, field_classes=CODEC.data_classes()),
        consents=ConsentStore(), topics=T, clock=FixedClock(NOW), pseudonym_key=b"k" * 32,
        identity=SubjectIdentity.from_keys_dir(tmp_path / "keys", Thresholds(), create=True),
    )  # fmt: skip


def test_the_index_keeps_who_holds_each_child_through_link_unlink_abort_and_rebuild(
    tmp_path: Path,
) -> None:
    identity = _identity(tmp_path)
    ix = identity.index
    written: list[IndexRecord] = []
    for nhs, name in ((JAMIE, "Jamie"), (SAM, "Sam")):
        written.append(identity.resolve(_subject(nhs, name)).index_record)
    jamie, sam = (k.decode() for k, _ in written)

    def note(p: str, shown: dict[str, bool]) -> bool:
        got = identity.note_shares(p, "e", shown)
        if got is not None:
            written.append(got)
        return got is not None

    assert note(jamie, {"police": True, "school": False})
    assert not note(jamie, {"police": True})  # nothing new: nothing written
    assert note(jamie, {"school": True})  # its copies show the pseudonym now
    assert not note("v1:nobody-the-index-knows", {"police": True})
    assert note(sam, {"mash": False, "school": True})
    held = {jamie: {"police": True, "school": True}, sam: {"mash": False, "school": True}}
    assert ix.recipients == held

    identity.begin()
    records, told = identity.link(jamie, sam)
    assert told == {"mash": False, "school": True}  # sam's holders; not the police
    identity.rollback()
    assert ix.recipients == held and ix.told == {}

    records, told = identity.link(jamie, sam)
    written += records
    assert ix.recipients == {jamie: {"police": True, "school": True, "mash": False}}
    assert note(jamie, {"health": True})  # under the merged child: listed as a share too

    fresh = _identity(tmp_path)  # a restarted router, from the topic's records in order
    for key, value in written:
        assert fresh.learn(key, value)
    assert (fresh.index.recipients, fresh.index.told) == (ix.recipients, ix.told)

    records, shares, told = identity.unlink(jamie, sam)
    # Those told of the link, and whoever received records under the merged child.
    assert told == {"mash": False, "school": True, "health": True} and shares == ("e health",)
    assert ix.recipients[sam] == told and jamie not in ix.told


def _feeds(routed: Routed) -> dict[str, Outbound]:
    """Feed topic -> the one record this message wrote there."""
    out: dict[str, Outbound] = {}
    for o in routed.outputs:
        if o.topic.startswith(T.feed_prefix):
            assert o.topic not in out
            out[o.topic] = o
    return out


def _notice(o: Outbound) -> dict[str, Any]:
    return CODEC.decode(o.value or b"", NOTICE)


def test_a_link_is_told_to_the_feeds_of_the_child_merged_in_keyed_as_its_records(
    tmp_path: Path,
) -> None:
    core = _core(tmp_path)
    a = core.handle(_anonymous(1, nhs_number=JAMIE, given_name="Jamie"))
    b = core.handle(_anonymous(2, nhs_number=SAM, given_name="Sam", family_name="Other",
                               date_of_birth="2011-07-02"))
    # One index record per event: the entry naming the child also lists its holders.
    [child], [other] = _index_keys(a), _index_keys(b)
    assert child is not None and other is not None and child != other
    copies = _feeds(b)
    assert copies and set(_feeds(a)) == set(copies)

    link = _decision("LINK", child.decode(), other.decode(), 3)
    routed = core.handle(link)
    assert routed.identity == "LINKED"
    told = _feeds(routed)
    assert set(told) == set(copies) and T.feed(RHI) in told
    decision = CODEC.decode(link.value or b"", "safeshare.IdentityDecision")
    for topic, o in told.items():
        n = _notice(o)
        subscriber = topic.removeprefix(T.feed_prefix)
        assert n["notice_id"] == notice_id(decision["decision_id"], subscriber)
        assert (n["action"], n["subscriber"]) == ("LINK", subscriber)
        # Keyed as this feed's copy of the merged child's event.
        assert o.key == copies[topic].key and n["other_record_key"].encode() == o.key
        shown = n["pseudonym"] is not None
        assert (n["pseudonym"], n["other_pseudonym"]) == (
            (child.decode(), other.decode()) if shown else (None, None))
        assert (o.key == other) == shown == (subscriber != RHI)
        assert b"Alex Worker" not in (o.value or b"")  # never who decided

    # The same decision again: applied once, told once.
    again = core.handle(_decision("LINK", child.decode(), other.decode(), 4))
    assert again.quarantined == "OTHER" and _feeds(again) == {}
    replayed = core.handle(link)
    assert replayed.duplicate and _feeds(replayed) == {}

    # The gateway hands a plain notice over as such (not as a record it cannot read).
    o = told[T.feed(RHI)]
    item = item_of(CODEC, Record(o.topic, 0, 9, o.key, o.value))
    assert item.disclosed and item.json["record"] is None
    assert item.json["identity_notice"]["action"] == "LINK"
    assert item.json["event_id"] == item.consulted.event_id == _notice(o)["notice_id"]

    unlink = core.handle(_decision("UNLINK", child.decode(), other.decode(), 5))
    assert unlink.identity == "UNLINKED"
    assert {t: _notice(o)["action"] for t, o in _feeds(unlink).items()} == dict.fromkeys(
        copies, "UNLINK")


def test_a_link_whose_notice_cannot_be_sealed_is_not_applied_at_all(tmp_path: Path) -> None:
    """Should the MASH's feed keys all be retired (the policy refuses that at load; here
    the router's copy of them is aged by hand), the link is quarantined and the index
    is as before: nothing half-announced, and the same decision applies once a key
    is there."""
    core = _core(tmp_path, policy_with_feed_keys(entry(keyring())))
    a = core.handle(_anonymous(1, nhs_number=JAMIE, given_name="Jamie"))
    b = core.handle(_anonymous(2, nhs_number=SAM, given_name="Sam", family_name="Other",
                               date_of_birth="2011-07-02"))
    [child], [other] = _index_keys(a), _index_keys(b)
    assert child is not None and other is not None
    assert is_sealed(CODEC, _feeds(b)[T.feed(MASH)].value or b"")
    topic, keys = core._to.of(MASH)
    core._to._found[MASH] = (topic, tuple(replace(k, not_after_ms=NOW - 1) for k in keys))
    refused = core.handle(_decision("LINK", child.decode(), other.decode(), 3))
    assert refused.quarantined == "OTHER" and refused.identity is None
    assert _index_keys(refused) == [] and _feeds(refused) == {}
    assert core.identity is not None and core.identity.knows(other.decode())
    core._to._found[MASH] = (topic, keys)
    applied = core.handle(_decision("LINK", child.decode(), other.decode(), 4))
    assert applied.identity == "LINKED" and T.feed(MASH) in _feeds(applied)
    assert not core.identity.knows(other.decode())
