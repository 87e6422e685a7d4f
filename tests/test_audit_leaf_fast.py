"""The router's fast path to audit leaves (leaf_bytes, per-decision templates) against
the AuditLeaf dataclass: the same bytes, or a refusal, for every input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import rfc8785  # an independent RFC 8785 implementation (PyPI: rfc8785), a test dependency
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import leaf_template as template_module
from broker.audit.exceptions import MalformedError
from broker.audit.leaf import (
    AuditLeaf,
    LeafKind,
    audit_encoder,
    decode_batch,
    encode_batch,
    subject_pseudonym,
)
from broker.audit.leaf_template import CanonicalLeaf, LeafEvent, LeafTemplate, leaf_bytes

H = hashlib.sha256


# -- leaf_bytes: the router's path -----------------------------------------------------
#
# leaf_bytes(fields) must give exactly AuditLeaf(**fields).to_bytes() (the leaf
# bytes are what the Merkle tree hashes: one byte off and every proof breaks),
# and refuse whatever the dataclass refuses.

# JSON-hostile characters: quotes, backslashes, every kind of control, the
# separators ECMAScript used to leave unescaped, non-BMP, and (separately) lone
# surrogates, which no valid leaf can hold.
_NASTY = '"\\/\x00\x08\t\n\x0c\r\x1f\x7f\x80\u2028\u2029\ufeff\uffff€😀'
unicode_text = st.text(st.characters(codec="utf-8") | st.sampled_from(_NASTY), max_size=12)
surrogate_text = st.text(
    st.characters(codec="utf-8") | st.sampled_from(_NASTY) | st.characters(categories=["Cs"]),
    max_size=12,
)
digests = st.binary(min_size=1, max_size=8).map(lambda b: H(b).hexdigest())


class Label(str):
    """A str subclass (as an enum or a policy object might hand over): valid, but not plain."""


class Millis(int):
    """An int subclass: valid for time_ms, but not plain."""


def leaf_fields(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid field dicts, as the router builds them: optional fields present or not."""
    lists = st.lists(text, max_size=4).flatmap(
        lambda xs: st.sampled_from([xs, tuple(xs), xs + xs[:1], list(reversed(xs))])
    )
    return st.fixed_dictionaries(
        {
            "time_ms": st.integers(0, 2**53 - 1) | st.sampled_from([0, 2**53 - 1]),
            # Not CONSENT, CONSULTED, LINKED, UNLINKED, KEPT_APART, REFUSED: their leaves have
            # members of their own (test_consent_leaf_*, test_consulted_leaf_*,
            # test_identity_leaf_*, test_refused_leaf_*).
            "kind": st.sampled_from(
                [k for k in [*LeafKind, *(k.value for k in LeafKind)]
                 if k not in ("CONSENT", "CONSULTED", "LINKED", "UNLINKED", "KEPT_APART",
                              "REVIEW_RAISED", "REFUSED")]
            ),
            "event_id": text,
            "event_digest": digests,
            "source_agency": text,
        },
        optional={
            **{n: text for n in ("recipient", "outcome", "rule_id", "lawful_basis", "reason")},
            "policy_digest": digests | st.just(""),
            "subject": digests | st.just(""),
            "consent_ref": st.none() | text,
            "delivered_digest": st.none() | digests,
            "data_classes_shared": lists,
            "fields_redacted": lists,
            "obligations": lists,
        },
    )


def outcome(build: Any) -> bytes | type[Exception]:
    """The bytes built, or the class of the audit error raised (any other error propagates)."""
    try:
        data: bytes = build()
    except MalformedError as exc:
        return type(exc)
    return data


@settings(max_examples=500, deadline=None)
@given(leaf_fields(unicode_text))
def test_leaf_bytes_are_the_dataclass_bytes(fields: dict[str, Any]) -> None:
    expected = AuditLeaf(**fields).to_bytes()
    # The template itself (not the dataclass fallback) writes these plain values.
    assert template_module._template_bytes(fields) == expected
    data = leaf_bytes(fields)
    assert data == expected
    assert AuditLeaf.from_bytes(data) == AuditLeaf(**fields)
    assert rfc8785.dumps(json.loads(data)) == data


@settings(max_examples=300, deadline=None)
@given(leaf_fields(surrogate_text))
def test_leaf_bytes_refuse_lone_surrogates_as_the_dataclass_does(fields: dict[str, Any]) -> None:
    assert outcome(lambda: leaf_bytes(fields)) == outcome(lambda: AuditLeaf(**fields).to_bytes())


# Values to put in any field: valid for some fields, wrong for others.
_sha = H(b"x").hexdigest()
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60) | st.sampled_from([-1, 2**53 - 1, 2**53]),
    st.floats(allow_nan=False),
    st.binary(max_size=4),
    unicode_text,
    st.sampled_from(
        [
            "",
            _sha,
            _sha.upper(),
            _sha[:63],
            _sha + "0",
            _sha[:63] + "\n",  # "$" would let a trailing newline through; "\Z" does not
            _sha + "\n",
            " " + _sha[:63],
            "0x" + _sha[:62],
            "٠" + _sha[:63],  # ARABIC-INDIC DIGIT ZERO: a digit, but not [0-9]
            _sha[:63] + "\ud800",
            "SHARED",
            "shared",
            LeafKind.QUARANTINED,
            Label(_sha),
            Label("SHARED"),
            Label(""),
            Millis(5),
            ["a", "b"],
            ("b", "a", "b"),
            ["a", 1],
            [b"a"],
            [None],
            [Label("z"), "a"],
            {"a"},
            {"a": "b"},
            [],
            (),
        ]
    ),
    st.lists(unicode_text | st.integers(), max_size=3),
)


@settings(max_examples=1000, deadline=None)
@given(
    leaf_fields(unicode_text),
    st.lists(st.tuples(st.sampled_from(sorted(AuditLeaf.__dataclass_fields__)), junk), max_size=3),
)
def test_leaf_bytes_refuse_what_the_dataclass_refuses(
    fields: dict[str, Any], changes: list[tuple[str, Any]]
) -> None:
    """Any value in any field: the same bytes, or MalformedError from both paths."""
    fields.update(changes)
    assert outcome(lambda: leaf_bytes(fields)) == outcome(lambda: AuditLeaf(**fields).to_bytes())


def test_leaf_bytes_refuse_each_kind_of_bad_field() -> None:
    """One of each mistake, so a fast path that let any through is caught by name."""
    good = dict(
        time_ms=1_700_000_000_000,
        kind="SHARED",
        event_id="e-1",
        event_digest=_sha,
        source_agency="police-devon",
        policy_digest=_sha,
        subject=_sha,
        delivered_digest=_sha,
        consent_ref="c-1",
        data_classes_shared=["location"],
        fields_redacted=["reporter.name"],
        obligations=["REVIEW@1"],
    )
    assert leaf_bytes(good) == AuditLeaf(**good).to_bytes()  # type: ignore[arg-type]
    bad: list[tuple[str, object]] = [
        ("time_ms", -1),
        ("time_ms", 2**53),
        ("time_ms", True),
        ("time_ms", 1.0),
        ("time_ms", "1"),
        ("kind", "shared"),
        ("kind", None),
        ("event_id", None),
        ("event_id", b"e-1"),
        ("source_agency", 1),
        ("reason", "\udc80"),  # lone surrogates: the message says so, not which field
        ("consent_ref", "\ud800"),
        ("event_digest", ""),
        ("delivered_digest", ""),
        *(
            (name, value)
            for name in ("event_digest", "policy_digest", "subject", "delivered_digest")
            for value in [
                _sha.upper(),
                _sha[:63],
                _sha + "0",
                _sha[:63] + "\n",
                "٠" + _sha[:63],
                "not-hex",
                Label("not-hex"),
                _sha.encode(),
                1,
            ]
        ),
        ("policy_digest", None),
        ("subject", None),
        ("data_classes_shared", "location"),
        ("data_classes_shared", {"location"}),
        ("fields_redacted", ["a", None]),
        ("obligations", [1]),
        ("obligations", ["\ud800"]),
    ]
    for name, value in bad:
        fields = {**good, name: value}
        says = "lone surrogate" if "\\ud" in ascii(value) else f"field '{name}'"
        with pytest.raises(MalformedError, match=says):
            AuditLeaf(**fields).to_bytes()  # type: ignore[arg-type]
        with pytest.raises(MalformedError, match=says):
            leaf_bytes(fields)


def test_leaf_bytes_name_missing_and_unknown_fields() -> None:
    """The dataclass raises TypeError here; the router's path says MalformedError, by name."""
    good = dict(time_ms=1, kind="WITHHELD", event_id="e", event_digest=_sha, source_agency="a")
    assert AuditLeaf.from_bytes(leaf_bytes(good)).kind is LeafKind.WITHHELD
    for required in good:
        with pytest.raises(MalformedError, match=rf"missing \['{required}'\]"):
            leaf_bytes({k: v for k, v in good.items() if k != required})
    with pytest.raises(MalformedError, match="unexpected \\['sequence'\\]"):
        leaf_bytes({**good, "sequence": 41})
    with pytest.raises(MalformedError, match="unexpected \\[1\\]"):
        leaf_bytes({**good, 1: "x"})  # type: ignore[dict-item]


def test_the_routers_leaves_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaf dicts as broker.routing.core builds them (quarantines, duplicates, and a
    decision's leaves where its template declined) never build an AuditLeaf: that is
    the point of leaf_bytes."""
    router_dicts: list[dict[str, Any]] = [
        dict(kind="QUARANTINED", time_ms=1, event_id="", event_digest=_sha, source_agency="",
             reason="UNDECODABLE"),
        dict(kind="DUPLICATE", time_ms=1, event_id="e", event_digest=_sha, source_agency="a",
             subject="", reason="DUPLICATE_EVENT_ID"),
        dict(time_ms=1, event_id="e", event_digest=_sha, source_agency="a", recipient="r",
             outcome="WITHHOLD", rule_id="", reason="NO_RULE", policy_digest=_sha, subject=_sha,
             kind="WITHHELD"),
        dict(time_ms=1, event_id="e", event_digest=_sha, source_agency="a", recipient="r",
             outcome="SHARE", rule_id="mash-all", reason="CONSENT_GIVEN", policy_digest=_sha,
             subject=_sha, kind="SHARED", lawful_basis="UK GDPR Art 6(1)(e)",
             data_classes_shared=["identity", "location"], fields_redacted=[],
             delivered_digest=_sha, consent_ref=None, obligations=["REVIEW_WITHIN_72H@2"]),
    ]  # fmt: skip
    expected = [AuditLeaf(**d).to_bytes() for d in router_dicts]

    def no_dataclass(fields: object) -> bytes:
        raise AssertionError(f"fell back to the dataclass for {fields}")

    monkeypatch.setattr(template_module, "_dataclass_bytes", no_dataclass)
    assert [leaf_bytes(d) for d in router_dicts] == expected
    assert audit_encoder([leaf_bytes(d) for d in router_dicts]) == [encode_batch(expected)]


def test_a_bad_leaf_is_refused_before_it_is_framed() -> None:
    """An unreadable leaf would break the log: the router's transaction fails instead."""
    leaf = dict(time_ms=1, kind="WITHHELD", event_id="e", event_digest=_sha, source_agency="a")
    framed = audit_encoder([leaf_bytes(leaf)])
    assert decode_batch(framed[0]) == [AuditLeaf(**leaf).to_bytes()]  # type: ignore[arg-type]
    with pytest.raises(MalformedError):
        leaf_bytes({**leaf, "event_digest": "not-a-digest"})


def test_leaf_bytes_keep_a_bounded_cache() -> None:
    """A long-running router sees ever new lists (say, a policy reload per day):
    the JSON kept for recurring ones must not grow without bound."""
    leaf = dict(time_ms=1, kind="SHARED", event_id="e", event_digest=_sha, source_agency="a")
    for i in range(template_module._set_texts.limit + 10):
        classes = [f"class-{i}", "location", "class-0"]
        data = leaf_bytes({**leaf, "data_classes_shared": classes})
        assert json.loads(data)["data_classes_shared"] == sorted(set(classes))
        assert len(template_module._set_texts) <= template_module._set_texts.limit


def test_the_keyed_pseudonymiser_gives_the_same_pseudonyms() -> None:
    from broker.audit.leaf import SubjectPseudonymiser  # noqa: PLC0415

    key = bytes(range(32))
    keyed = SubjectPseudonymiser(key)
    for subject in ("psn-C4C3-0B1F", "", "ünïcode", "x" * 500):
        assert keyed(subject) == subject_pseudonym(key, subject)
    assert keyed("a") != SubjectPseudonymiser(bytes(32))("a")
    with pytest.raises(ValueError, match="32 bytes"):
        SubjectPseudonymiser(b"short")


# -- the router's path: one template per decision, filled per event -------------------

_DECISION_PART = frozenset(
    ("kind", "recipient", "outcome", "rule_id", "reason", "policy_digest", "lawful_basis")
    + ("data_classes_shared", "fields_redacted")
)
_EVENT_PART = frozenset(("event_id", "event_digest", "source_agency", "subject"))
_LEAF_PART = frozenset(("time_ms", "delivered_digest", "consent_ref", "obligations"))


def test_the_three_parts_are_all_of_a_leafs_fields() -> None:
    """All but a CONSENT, CONSULTED, identity or REFUSED leaf's own members,
    which only the dataclass path writes."""
    consent_only = {"consent_purpose", "consent_roles", "consent_data_classes",
                    "consent_expires_ms", "consulted_by", "consulted_purpose",
                    "consulted_via", "consulted_record", "identity_other",
                    "identity_decided_by", "identity_shares", "refused_by"}
    assert set(AuditLeaf.__dataclass_fields__) - consent_only == (
        _DECISION_PART | _EVENT_PART | _LEAF_PART
    )


def part(fields: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in names}


def by_template(decision: dict[str, Any], fields: dict[str, Any]) -> CanonicalLeaf | None:
    """One leaf through the router's path: the decision's template, the event's part,
    the leaf's own values; None where any of them declined."""
    template = LeafTemplate.checked(**decision)
    event = LeafEvent.checked(**part(fields, _EVENT_PART))
    if template is None or event is None:
        return None
    return template.fill(event, **part(fields, _LEAF_PART))


@settings(max_examples=300, deadline=None)
@given(st.lists(leaf_fields(unicode_text), min_size=1, max_size=4))
def test_a_decisions_template_writes_each_of_its_leaves_as_the_dataclass_does(
    many: list[dict[str, Any]],
) -> None:
    """One template (the first leaf's decision fields), filled with several events'
    and leaves' own values: each leaf byte for byte the dataclass's and rfc8785's."""
    decision = part(many[0], _DECISION_PART)
    template = LeafTemplate.checked(**decision)
    assert template is not None
    for fields in many:
        merged = {**part(fields, _EVENT_PART | _LEAF_PART), **decision}
        expected = AuditLeaf(**merged).to_bytes()
        event = LeafEvent.checked(**part(fields, _EVENT_PART))
        assert event is not None
        leaf = template.fill(event, **part(fields, _LEAF_PART))
        assert leaf is not None and leaf.data == expected
        assert rfc8785.dumps(json.loads(leaf.data)) == leaf.data
        # Readable by field name, as the dicts were.
        assert leaf["event_id"] == merged["event_id"]
        assert AuditLeaf(**leaf) == AuditLeaf(**merged)
        assert leaf_bytes(leaf) == expected


@settings(max_examples=1000, deadline=None)
@given(
    leaf_fields(unicode_text),
    st.lists(st.tuples(st.sampled_from(sorted(template_module._FIELD_ORDER)), junk), max_size=3),
)
def test_a_template_declines_what_it_cannot_vouch_for(
    fields: dict[str, Any], changes: list[tuple[str, Any]]
) -> None:
    """Any value in any field: the template path writes the dataclass's bytes or
    declines (the router then keeps the dict); it never writes other bytes."""
    fields.update(changes)
    expected = outcome(lambda: AuditLeaf(**fields).to_bytes())
    leaf = by_template(part(fields, _DECISION_PART), fields)
    if leaf is not None:
        assert leaf.data == expected


@settings(max_examples=300, deadline=None)
@given(leaf_fields(surrogate_text))
def test_a_template_declines_lone_surrogates(fields: dict[str, Any]) -> None:
    expected = outcome(lambda: AuditLeaf(**fields).to_bytes())
    leaf = by_template(part(fields, _DECISION_PART), fields)
    assert (leaf.data if leaf is not None else MalformedError) == expected


def test_a_template_declines_each_kind_of_bad_value() -> None:
    """One of each mistake per part, named, so a check that went missing is caught."""
    event: dict[str, Any] = dict(
        event_id="e-1", event_digest=_sha, source_agency="police-devon", subject=_sha
    )
    own: dict[str, Any] = dict(
        time_ms=1, delivered_digest=_sha, consent_ref="c-1", obligations=["REVIEW@1"]
    )
    decision: dict[str, Any] = dict(
        kind="SHARED", policy_digest=_sha, data_classes_shared=["location"]
    )
    template = LeafTemplate.checked(**decision)
    good_event = LeafEvent.checked(**event)
    assert template is not None and good_event is not None
    assert template.fill(good_event, **own) is not None
    digests_wrong: list[object] = [_sha.upper(), _sha[:63], _sha + "0", _sha[:63] + "\n",
                                   "٠" + _sha[:63], _sha[:63] + "\ud800", Label(_sha),
                                   _sha.encode(), None]  # fmt: skip
    bad_decision: list[tuple[str, object]] = [
        ("kind", "shared"), ("kind", None), ("recipient", Label("r")), ("reason", "\udc80"),
        ("data_classes_shared", "location"), ("fields_redacted", ["a", None]),
        *(("policy_digest", v) for v in digests_wrong),
    ]  # fmt: skip
    for name, value in bad_decision:
        assert LeafTemplate.checked(**{**decision, name: value}) is None, (name, value)
    bad_event: list[tuple[str, object]] = [
        ("event_id", None), ("event_id", "\ud800"), ("source_agency", Label("a")),
        ("event_digest", ""), *(("event_digest", v) for v in digests_wrong),
        *(("subject", v) for v in digests_wrong),
    ]  # fmt: skip
    for name, value in bad_event:
        assert LeafEvent.checked(**{**event, name: value}) is None, (name, value)
    bad_own: list[tuple[str, object]] = [
        ("time_ms", -1), ("time_ms", 2**53), ("time_ms", True), ("time_ms", Millis(1)),
        ("time_ms", "1"), ("delivered_digest", ""), ("consent_ref", "\ud800"),
        ("consent_ref", 1), ("obligations", [1]), ("obligations", "REVIEW"),
        ("obligations", {"REVIEW"}), ("obligations", ["\ud800"]),
        *(("delivered_digest", v) for v in digests_wrong if v is not None),
    ]  # fmt: skip
    for name, value in bad_own:
        assert template.fill(good_event, **{**own, name: value}) is None, (name, value)
    assert template.fill(None, **own) is None  # type: ignore[arg-type]


def test_the_audit_encoder_frames_template_leaves_as_they_are() -> None:
    """Template leaves and dicts' leaves mix in one batch, in order, byte for byte."""
    quarantined = dict(time_ms=1, kind="QUARANTINED", event_id="", event_digest=_sha,
                       source_agency="", reason="UNDECODABLE")  # fmt: skip
    shared = dict(time_ms=2, kind="SHARED", event_id="e", event_digest=_sha, source_agency="a",
                  recipient="r", policy_digest=_sha, subject=_sha, delivered_digest=_sha,
                  data_classes_shared=["location", "identity"], obligations=["R@3"])  # fmt: skip
    template_leaf = by_template(part(shared, _DECISION_PART), shared)
    assert isinstance(template_leaf, CanonicalLeaf)
    leaves = [leaf_bytes(quarantined), template_leaf.data, leaf_bytes(shared)]
    assert audit_encoder(leaves) == audit_encoder([leaves[0], leaves[2], leaves[2]])
    assert decode_batch(audit_encoder(leaves)[0]) == [
        AuditLeaf(**quarantined).to_bytes(),  # type: ignore[arg-type]
        AuditLeaf(**shared).to_bytes(),  # type: ignore[arg-type]
        AuditLeaf(**shared).to_bytes(),  # type: ignore[arg-type]
    ]


def test_the_leaf_in_the_module_docstring_is_one_the_router_writes() -> None:
    """broker/audit/leaf.py shows a real leaf; if routing or the example policy
    changes what the router writes, this fails: paste the new leaf there."""
    from broker import audit  # noqa: PLC0415
    from broker.audit import leaf as leaf_module  # noqa: PLC0415
    from broker.clock import FixedClock  # noqa: PLC0415
    from broker.policy import ConsentStore, Policy  # noqa: PLC0415
    from broker.routing.core import Inbound, RoutingCore  # noqa: PLC0415
    from broker.topics import Topics  # noqa: PLC0415
    from tests.helpers import CODEC, EVENTS  # noqa: PLC0415

    doc = leaf_module.__doc__ or ""
    block = doc.split("checks it)::\n", 1)[1].split("\n\n", 2)[0]
    shown = "".join(line.strip() for line in block.splitlines()).encode()
    assert AuditLeaf.from_bytes(shown).to_bytes() == shown  # canonical as shown

    policy = Path(audit.__file__).resolve().parents[2] / "deploy/policy/example-mash.yaml"
    topics = Topics("unit")
    core = RoutingCore(
        codec=CODEC,
        decider=Policy.load(policy, field_classes=CODEC.data_classes()),
        consents=ConsentStore(),
        topics=topics,
        clock=FixedClock(1_795_000_000_000),
        pseudonym_key=b"k" * 32,
        max_message_bytes=64 * 1024,
    )
    event = json.loads((EVENTS / "missing_episode.json").read_text(encoding="utf-8"))
    data = CODEC.encode(CODEC.from_json(event))
    agency = CODEC.decode(data)["source"]["agency_id"]
    routed = core.handle(Inbound(topics.ingest(agency), 0, 7, None, data))
    written = set(routed.leaves)
    # The example policy changes often, and with it its digest and the copy's
    # (the feed record carries the decision), and the event digest with each new
    # ConcernEvent version (its fingerprint is in the bytes): held to their form only.
    def loose(data: bytes) -> dict[str, Any]:
        fields = json.loads(data)
        for name in ("policy_digest", "delivered_digest", "event_digest"):
            value = fields.pop(name)
            assert value is None or re.fullmatch("[0-9a-f]{64}", value)
        return fields

    assert loose(shown) in [loose(data) for data in written], (
        "the docstring's leaf is not one the router writes for this event"
    )
