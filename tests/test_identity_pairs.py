"""Two router instances name one new child twice: one review item pairs them (no Kafka).

Each instance holds its own identity index and learns the other's entries a
fetch later. Here two routing cores with the same partnership key and their
own indexes route the same child at the same moment; each then learns the
other's entry as the followers would (live), and raises the pair's review
item, with the same id; a rebuild raises none, nor a pair its writer already
put to a person; an aborted transaction gives the pair back; a person's link
joins the two. The real-broker scene is tests/test_router_identity_pairs.py.
"""

from __future__ import annotations

from pathlib import Path

from broker.audit.leaf import AuditLeaf, LeafKind
from broker.clock import FixedClock
from broker.identity.linkage import Thresholds
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, Outbound, RoutingCore
from broker.routing.identity import SubjectIdentity
from broker.routing.identity_decisions import REVIEW_ITEM, pair_reviews
from tests.helpers import CODEC, example
from tests.test_routing_consent_identity import NOW, POLICY, T, _decision

CHILD = {"pseudonym": None, "nhs_number": None, "given_name": "Jamie",
         "family_name": "Example", "date_of_birth": "2010-03-14", "postcode": "TQ1 1AA"}


def _core(keys: Path) -> RoutingCore:
    return RoutingCore(
        codec=CODEC, decider=Policy.load(POLICY, field_classes=CODEC.data_classes()),
        consents=ConsentStore(), topics=T, clock=FixedClock(NOW), pseudonym_key=b"k" * 32,
        identity=SubjectIdentity.from_keys_dir(keys, Thresholds(), create=True),
    )  # fmt: skip


def _event(offset: int, **subject: object) -> Inbound:
    e = example("missing_episode")
    e["subject"] = {**e["subject"], **CHILD, **subject}
    return Inbound(T.ingest("devon-cornwall-police"), 0, offset, None,
                   CODEC.encode(CODEC.from_json(e)))


def _index_records(outputs: list[Outbound]) -> list[tuple[bytes | None, bytes | None]]:
    return [(o.key, o.value) for o in outputs if o.topic == T.identity]


def _items(outputs: list[Outbound]) -> list[dict[str, object]]:
    return [CODEC.decode(o.value, REVIEW_ITEM) for o in outputs
            if o.topic.startswith(T.identity_reviews_prefix)]


def _named(core: RoutingCore, offset: int, **subject: object) -> tuple[str, list]:
    routed = core.handle(_event(offset, **subject))
    assert routed.quarantined is None, routed.quarantined
    [(key, value)] = _index_records(routed.outputs)
    assert key is not None
    return key.decode(), [(key, value)]


def test_the_same_child_named_by_two_instances_at_once_is_one_review_item(
    tmp_path: Path,
) -> None:
    a, b = _core(tmp_path / "keys"), _core(tmp_path / "keys")
    assert a.identity is not None and b.identity is not None
    # At the same moment: neither knows the other's child yet.
    pa, from_a = _named(a, 1)
    pb, from_b = _named(b, 2, given_name="Jamie", postcode=None)
    assert pa != pb
    assert pair_reviews(a, NOW) == ([], [])  # nothing met yet

    for key, value in from_b:
        assert a.learn_identity_record(key, value, live=True)
    for key, value in from_a:
        assert b.learn_identity_record(key, value, live=True)
    a.begin_consents()
    out_a, leaves_a = pair_reviews(a, NOW)
    b.begin_consents()
    out_b, leaves_b = pair_reviews(b, NOW)
    items_a, items_b = _items(out_a), _items(out_b)
    # To the MASH that covers the child's local authority, and to no one else.
    assert {o.topic for o in out_a} == {o.topic for o in out_b} == {
        T.identity_reviews("torbay-mash")}
    [item_a], [item_b] = items_a, items_b
    assert item_a["review_id"] == item_b["review_id"]  # one item at the desk
    assert {item_a["candidate"], item_a["provisional"]} == {pa, pb}
    assert {item_b["candidate"], item_b["provisional"]} == {pa, pb}
    assert item_a["match_probability"] >= 0.5  # type: ignore[operator]
    # Audited: a REVIEW_RAISED leaf with keyed pseudonyms only.
    [leaf] = [AuditLeaf.from_bytes(x) for x in leaves_a]
    assert leaf.kind is LeafKind.REVIEW_RAISED and leaf.event_id == item_a["review_id"]
    assert {leaf.subject, leaf.identity_other} == {a.subject_hmac(pa), a.subject_hmac(pb)}
    assert all(p.encode() not in x and b"Jamie" not in x for x in leaves_a for p in (pa, pb))
    # Raised once per instance: nothing more on the next transaction.
    a.begin_consents()
    assert pair_reviews(a, NOW) == ([], [])

    # Never linked by itself: a person decides, and the link joins the two.
    survivor, other = str(item_a["candidate"]), str(item_a["provisional"])
    routed = a.handle(_decision("LINK", survivor, other, 9))
    assert routed.identity == "LINKED"
    assert not a.identity.knows(other)
    assert a.handle(_event(10)).identity == "LINK"
    assert _index_records(a.handle(_event(11)).outputs)[0][0] == survivor.encode()


def test_a_rebuild_a_pair_already_in_review_and_an_abort_raise_no_second_item(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    a, b = _core(keys), _core(keys)
    pa, from_a = _named(a, 1)
    pb, from_b = _named(b, 2)
    # Rebuilding the index from the topic (a router starting): nothing is raised.
    fresh = _core(keys)
    for key, value in from_a + from_b:
        assert fresh.learn_identity_record(key, value)
    assert pair_reviews(fresh, NOW) == ([], [])

    # r knows a's child and names a new one the model sends to review against it
    # (Jim Exmaple, born a day later: p 0.75): that pair is a person's already, and
    # a, learning r's child, raises nothing more.
    r = _core(keys)
    for key, value in from_a:
        r.learn_identity_record(key, value, live=True)
    routed = r.handle(_event(3, given_name="Jim", family_name="Exmaple", postcode=None,
                             date_of_birth="2010-03-15"))
    assert routed.identity == "REVIEW"
    [item] = _items(routed.outputs)
    assert item["candidate"] == pa
    for key, value in _index_records(routed.outputs):
        a.learn_identity_record(key, value, live=True)
    a.begin_consents()
    assert pair_reviews(a, NOW) == ([], [])

    # A transaction that aborts gives its pairs back for the next one.
    for key, value in from_b:
        a.learn_identity_record(key, value, live=True)
    a.begin_consents()
    first = _items(pair_reviews(a, NOW)[0])
    assert [{i["candidate"], i["provisional"]} for i in first] == [{pa, pb}]
    a.rollback_consents()
    a.begin_consents()
    assert _items(pair_reviews(a, NOW)[0]) == first
