"""The routing core names the child of an event without a pseudonym (no Kafka)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from broker.clock import FixedClock
from broker.identity.decisions import DecisionProblem
from broker.identity.linkage import Thresholds
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, RoutingCore
from broker.routing.identity import SubjectIdentity
from broker.topics import Topics
from tests.helpers import CODEC, example

T = Topics("unit")
NOW = 1_795_000_000_000
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"


def _core(identity: SubjectIdentity | None) -> RoutingCore:
    return RoutingCore(
        codec=CODEC,
        decider=Policy.load(POLICY, field_classes=CODEC.data_classes()),
        consents=ConsentStore(),
        topics=T,
        clock=FixedClock(NOW),
        pseudonym_key=b"k" * 32,
        identity=identity,
    )


def _identity(tmp_path: Path) -> SubjectIdentity:
    return SubjectIdentity.from_keys_dir(tmp_path / "keys", Thresholds(), create=True)


def _anonymous(offset: int = 7, **subject: object) -> Inbound:
    e = example("missing_episode")
    e["subject"] = {**e["subject"], "pseudonym": None, **subject}
    return Inbound(
        T.ingest("devon-cornwall-police"), 0, offset, None, CODEC.encode(CODEC.from_json(e))
    )


def test_without_a_partnership_key_an_event_without_pseudonym_is_not_shared() -> None:
    routed = _core(None).handle(_anonymous())
    assert routed.quarantined == "OTHER" and routed.shared == []
    assert [o.topic for o in routed.outputs] == [T.quarantine]
    q = CODEC.decode(routed.outputs[0].value, "safeshare.QuarantineRecord")
    assert "partnership key" in q["detail"]


def test_copies_carry_the_derived_pseudonym_exactly_as_the_codec_writes_them(
    tmp_path: Path,
) -> None:
    identity = _identity(tmp_path)
    routed = _core(identity).handle(_anonymous())
    want = identity.resolver.keys.of_nhs_number("9434765919")
    assert routed.identity == "NEW"
    index = [o for o in routed.outputs if o.topic == T.identity]
    assert [o.key for o in index] == [want.encode()]
    feeds = [o for o in routed.outputs if o.topic.startswith(T.feed_prefix)]
    assert feeds
    for out in feeds:
        record = CODEC.decode(out.value, "safeshare.FeedRecord")
        classes = set(record["decision"]["data_classes_shared"])
        event = CODEC.decode(_anonymous().value or b"")
        event["subject"]["pseudonym"] = want
        expected = {"decision": record["decision"], "event": CODEC.redact(event, classes)[0]}
        # Event ids differ per _anonymous() call: compare with the routed one's.
        expected["event"]["event_id"] = record["event"]["event_id"]
        assert out.value == CODEC.encode(expected, "safeshare.FeedRecord")
        if "pseudonym" in classes:
            assert record["event"]["subject"]["pseudonym"] == want and out.key == want.encode()
    assert all(json.loads(lf)["subject"] == _core(None).subject_hmac(want) for lf in routed.leaves)


def test_an_aborted_transaction_takes_its_index_records_back(tmp_path: Path) -> None:
    identity = _identity(tmp_path)
    core = _core(identity)
    core.begin_consents()
    core.handle(_anonymous(given_name="Jamie"))
    assert len(identity.index.records) == 1
    core.rollback_consents()
    assert identity.index.records == {} and identity.index.anchors == {}
    # Reading the committed record back (another instance's) restores it.
    core.begin_consents()
    routed = core.handle(_anonymous(offset=8, given_name="Jamie"))
    (key, value) = next((o.key, o.value) for o in routed.outputs if o.topic == T.identity)
    fresh = _identity(tmp_path)
    assert fresh.learn(key, value)
    assert fresh.index.records == identity.index.records
    assert fresh.index.anchors == identity.index.anchors


def test_link_and_unlink_are_undone_by_a_rollback_and_a_refused_one_changes_nothing(
    tmp_path: Path,
) -> None:
    identity = _identity(tmp_path)
    ix = identity.index
    jamie = identity.resolve(_subject("9434765919", "Jamie")).pseudonym
    sam = identity.resolve(_subject("9434765870", "Sam")).pseudonym
    before = (copy.deepcopy(ix.records), dict(ix.anchors))

    identity.begin()
    with pytest.raises(DecisionProblem, match="not a child the identity index knows"):
        identity.link(jamie, "v1:nobody")
    with pytest.raises(DecisionProblem, match="was not linked"):
        identity.unlink(jamie, sam)
    identity.rollback()
    assert (ix.records, ix.anchors) == before and ix.merged == {}

    identity.begin()
    records, told = identity.link(jamie, sam)
    assert told == {}  # no one holds sam's records yet
    assert [k for k, _ in records] == [jamie.encode(), sam.encode()]
    assert records[1][1] is None and sam not in ix.records  # tombstoned: merged into jamie
    identity.rollback()
    assert (ix.records, ix.anchors) == before and ix.merged == {}

    identity.link(jamie, sam)
    identity.begin()
    records, shares, told = identity.unlink(jamie, sam)
    assert [k for k, _ in records] == [jamie.encode(), sam.encode()] and shares == ()
    assert told == {}
    assert (ix.records, ix.anchors) == before
    identity.rollback()
    assert sam not in ix.records and sam in ix.merged[jamie]


def _subject(nhs: str, given_name: str) -> dict[str, object]:
    e = example("missing_episode")
    return {**e["subject"], "pseudonym": None, "nhs_number": nhs, "given_name": given_name}
