"""Audit leaves: RFC 8785 canonical bytes, strict parsing, pseudonyms, batch framing."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
import rfc8785  # an independent RFC 8785 implementation (PyPI: rfc8785), a test dependency
from hypothesis import given, settings
from hypothesis import strategies as st

from broker._jcs import CanonicalizationError, canonicalize, parse_canonical
from broker.audit import leaf_template as template_module
from broker.audit.exceptions import MalformedError
from broker.audit.leaf import (
    AuditLeaf,
    LeafKind,
    decode_batch,
    encode_batch,
    subject_pseudonym,
)
from broker.audit.leaf_template import CanonicalLeaf, LeafEvent, LeafTemplate, leaf_bytes
from broker.routing.app import audit_encoder

H = hashlib.sha256


def make_leaf(seq: int = 41, **kw: Any) -> AuditLeaf:
    base: dict[str, object] = dict(
        time_ms=1_700_000_000_000 + seq,
        kind=LeafKind.SHARED,
        event_id="5f0c1e8e-9a49-4d1c-8d57-6a8f1f0f2a11",
        event_digest=H(b"event").hexdigest(),
        source_agency="police-devon",
        recipient="mash-torbay",
        outcome="ALLOW",
        rule_id="mash-all",
        lawful_basis="UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18",
        data_classes_shared=["location", "concern_summary"],
        fields_redacted=["reporter.name", "reporter.contact"],
        policy_digest=H(b"policy").hexdigest(),
        consent_ref=None,
        delivered_digest=H(b"delivered").hexdigest(),
        subject=subject_pseudonym(b"k" * 32, "child-1"),
        reason="",
        obligations=["review within 72h"],
    )
    base.update(kw)
    return AuditLeaf(**base)  # type: ignore[arg-type]


# -- RFC 8785 ----------------------------------------------------------------------


def test_jcs_sorts_members_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3 sorting example.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [k for k in json.loads(canonicalize(value))]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_jcs_string_escaping_matches_rfc_example() -> None:
    # RFC 8785 §3.2.4, the "literals" and "string" members of the example.
    value = {"string": '\u20ac$\x0f\nA\'B"\\\\"/', "literals": [None, True, False]}
    assert (
        canonicalize(value)
        == '{"literals":[null,true,false],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'.encode()
    )


def test_jcs_refuses_what_it_cannot_reproduce() -> None:
    for bad in [1.5, 2**53, -(2**53), "\ud800", {1: "x"}, b"bytes", {"a": float("nan")}]:
        with pytest.raises(CanonicalizationError):
            canonicalize(bad)
    for text in [
        b'{"a":1,"a":2}',
        b'{"a":1.0}',
        b'{"a":NaN}',
        b'{ "a":1}',
        b'{"b":1,"a":2}',
        b"\xef\xbb\xbf{}",
    ]:
        with pytest.raises(CanonicalizationError):
            parse_canonical(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_jcs_agrees_with_an_independent_implementation(value: object) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)
    assert parse_canonical(canonicalize(value)) == json.loads(canonicalize(value))


# -- leaves --------------------------------------------------------------------------


def test_leaf_bytes_are_canonical_and_round_trip() -> None:
    leaf = make_leaf()
    data = leaf.to_bytes()
    assert data == canonicalize(json.loads(data))
    assert b" " not in data.replace(b"UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18", b"").replace(
        b"review within 72h", b""
    )
    doc = json.loads(data)
    assert doc["v"] == 1 and doc["kind"] == "SHARED" and doc["consent_ref"] is None
    assert doc["data_classes_shared"] == ["concern_summary", "location"]  # sorted
    assert doc["fields_redacted"] == ["reporter.contact", "reporter.name"]
    assert AuditLeaf.from_bytes(data) == leaf
    assert list(doc) == sorted(doc)


def test_leaf_from_bytes_refuses_non_canonical_input() -> None:
    data = make_leaf().to_bytes()
    doc = json.loads(data)
    variants = [
        json.dumps(doc).encode(),  # whitespace
        json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":")).encode(),  # key order
        data.replace(b'"time_ms":1700000000041', b'"time_ms":1700000000041.0'),
        data.replace(b'"time_ms":1700000000041', b'"time_ms":"1700000000041"'),
        data.replace(b'"time_ms":1700000000041', b'"sequence":41,"time_ms":1700000000041'),
        data.replace(b'["concern_summary","location"]', b'["location","concern_summary"]'),
        data.replace(b'"v":1', b'"v":2'),
        data.replace(b'"reason":"",', b""),
        data.replace(b'"reason":"",', b'"reason":"","reasons":"",'),
        data.replace(b'"kind":"SHARED"', b'"kind":"STOLEN"'),
        data.replace(b'"reason":""', b'"reason":"\\ud800"'),
        data + b"\n",
    ]
    for v in variants:
        assert v != data
        with pytest.raises(MalformedError):
            AuditLeaf.from_bytes(v)


def test_leaf_validates_its_fields() -> None:
    bad_fields: list[dict[str, Any]] = [
        dict(time_ms=-1),
        dict(time_ms=True),
        dict(time_ms=2**53),
        dict(kind="NOPE"),
        dict(event_digest="ABC"),
        dict(event_digest=H(b"x").hexdigest().upper()),
        dict(subject="not-hex"),
        dict(delivered_digest=""),
        dict(data_classes_shared="identity"),
        dict(obligations=[1]),
        dict(recipient=None),
    ]
    for bad in bad_fields:
        with pytest.raises(MalformedError):
            make_leaf(**bad)
    quarantine = make_leaf(kind="QUARANTINED", recipient="", subject="", delivered_digest=None)
    assert AuditLeaf.from_bytes(quarantine.to_bytes()).kind is LeafKind.QUARANTINED


def test_a_leaf_carries_no_index() -> None:
    # Several routers write one audit partition in their own transactions: none
    # of them can know a leaf's index, which is its position in the tree.
    doc = json.loads(make_leaf().to_bytes())
    assert "sequence" not in doc and "index" not in doc
    with pytest.raises(TypeError):
        AuditLeaf(sequence=1, **{k: v for k, v in doc.items() if k != "v"})


def test_the_routers_leaf_dicts_are_accepted() -> None:
    """The dicts broker.routing.core emits (AuditLeaf's fields, kind as a string)."""
    digest = H(b"bytes that did not decode").hexdigest()
    undecodable = {
        "kind": "QUARANTINED",
        "time_ms": 1_700_000_000_000,
        "event_id": "",  # nothing could be decoded: no event id to give
        "event_digest": digest,
        "source_agency": "",
        "reason": "UNDECODABLE",
    }
    leaf = AuditLeaf(**undecodable)  # type: ignore[arg-type]
    assert leaf.event_id == "" and AuditLeaf.from_bytes(leaf.to_bytes()) == leaf
    shared = {
        "time_ms": 1_700_000_000_000,
        "event_id": "5f0c1e8e-9a49-4d1c-8d57-6a8f1f0f2a11",
        "event_digest": digest,
        "source_agency": "police-devon",
        "recipient": "mash-torbay",
        "outcome": "SHARE",
        "rule_id": "mash-all",
        "reason": "CONSENT_GIVEN",
        "policy_digest": H(b"policy").hexdigest(),
        "subject": subject_pseudonym(b"k" * 32, "child-1"),
        "kind": "SHARED",
        "lawful_basis": "UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18",
        "data_classes_shared": ["concern_summary", "location"],
        "fields_redacted": ["reporter.name"],
        "delivered_digest": H(b"copy").hexdigest(),
        "consent_ref": None,
        "obligations": ["REVIEW_WITHIN_72H@1700259200000"],
    }
    leaf = AuditLeaf(**shared)  # type: ignore[arg-type]
    assert AuditLeaf.from_bytes(leaf.to_bytes()).obligations == ("REVIEW_WITHIN_72H@1700259200000",)


@settings(max_examples=100, deadline=None)
@given(
    seq=st.integers(0, 2**53 - 1),
    text=st.text(max_size=30),
    classes=st.lists(st.text(max_size=10), max_size=5),
    consent=st.none() | st.text(max_size=10),
)
def test_leaf_round_trip_property(
    seq: int, text: str, classes: list[str], consent: str | None
) -> None:
    leaf = make_leaf(
        seq,
        time_ms=seq,
        event_id=text,
        reason=text,
        data_classes_shared=classes,
        consent_ref=consent,
    )
    assert AuditLeaf.from_bytes(leaf.to_bytes()) == leaf
    assert leaf.to_bytes() == canonicalize(json.loads(leaf.to_bytes()))
    assert rfc8785.dumps(json.loads(leaf.to_bytes())) == leaf.to_bytes()


def test_subject_pseudonym_is_domain_separated_hmac() -> None:
    key = bytes(range(32))
    got = subject_pseudonym(key, "child-1")
    expected = hmac.new(
        key, b"safeshare/audit/subject-pseudonym/v1\x00child-1", hashlib.sha256
    ).hexdigest()
    assert got == expected
    assert got != hmac.new(key, b"child-1", hashlib.sha256).hexdigest()
    assert subject_pseudonym(key, "child-2") != got
    with pytest.raises(ValueError):
        subject_pseudonym(b"short", "child-1")


# -- batches -----------------------------------------------------------------------------


def test_batch_round_trip_and_layout() -> None:
    leaves = [make_leaf(i) for i in range(3)]
    msg = encode_batch(leaves)
    assert msg[:5] == b"SSAB\x01" and int.from_bytes(msg[5:9], "big") == 3
    first = leaves[0].to_bytes()
    assert int.from_bytes(msg[9:13], "big") == len(first) and msg[13 : 13 + len(first)] == first
    assert decode_batch(msg) == [leaf.to_bytes() for leaf in leaves]
    assert decode_batch(encode_batch([])) == []


def test_batch_refuses_damage() -> None:
    msg = encode_batch([make_leaf(i) for i in range(2)])
    for bad in [
        b"XXXX" + msg[4:],
        msg[:-1],
        msg + b"\x00",
        msg[:5] + (3).to_bytes(4, "big") + msg[9:],
        msg[:9] + (2**31).to_bytes(4, "big") + msg[13:],
        msg[:8],
    ]:
        with pytest.raises(MalformedError):
            decode_batch(bad)


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
            # Not CONSENT, CONSULTED, LINKED, UNLINKED: their leaves have members of their
            # own (test_consent_leaf_*, test_consulted_leaf_*, test_identity_leaf_*).
            "kind": st.sampled_from(
                [k for k in [*LeafKind, *(k.value for k in LeafKind)]
                 if k not in ("CONSENT", "CONSULTED", "LINKED", "UNLINKED")]
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
    from broker.audit.leaf import SubjectPseudonymiser, subject_pseudonym  # noqa: PLC0415

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
    """All but a CONSENT, CONSULTED, LINKED or UNLINKED leaf's own members, which only
    the dataclass path writes."""
    consent_only = {"consent_purpose", "consent_roles", "consent_data_classes",
                    "consent_expires_ms", "consulted_by", "consulted_purpose",
                    "consulted_via", "consulted_record", "identity_other",
                    "identity_decided_by", "identity_shares"}
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


# -- CONSENT leaves ------------------------------------------------------------------------
_CONSENT = dict(
    time_ms=1_700_000_000_000, kind="CONSENT", event_id="c-1", event_digest=_sha,
    source_agency="safe-return-charity", subject=_sha, outcome="GIVEN",
    rule_id="return-home-interviewers", policy_digest=_sha, consent_ref=None,
    consent_purpose="SAFEGUARDING", consent_roles=["school_dsl", "mash_team"],
    consent_data_classes=[], consent_expires_ms=None,
)


def test_consent_leaf_has_its_own_members_and_round_trips() -> None:
    data = leaf_bytes(_CONSENT)
    assert data == AuditLeaf(**_CONSENT).to_bytes()  # type: ignore[arg-type]
    assert rfc8785.dumps(json.loads(data)) == data
    leaf = AuditLeaf.from_bytes(data)
    assert leaf.kind is LeafKind.CONSENT and leaf.consent_roles == ("mash_team", "school_dsl")
    assert json.loads(data)["consent_expires_ms"] is None
    # Other kinds never carry them, so their bytes are as before.
    shared = AuditLeaf(time_ms=1, kind=LeafKind.SHARED, event_id="e", event_digest=_sha,
                       source_agency="a")
    assert b"consent_purpose" not in shared.to_bytes()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"consent_purpose": None}, "consent_purpose"),
        ({"consent_purpose": ""}, "consent_purpose"),
        ({"consent_roles": None}, "consent_roles"),
        ({"consent_data_classes": "health"}, "consent_data_classes"),
        ({"consent_expires_ms": -1}, "consent_expires_ms"),
        ({"kind": "SHARED"}, "belongs to a CONSENT leaf only"),
    ],
)
def test_consent_leaf_refuses_what_is_wrong(change: dict[str, Any], says: str) -> None:
    fields = {**_CONSENT, **change}
    with pytest.raises(MalformedError, match=says):
        leaf_bytes(fields)
    with pytest.raises(MalformedError, match=says):
        AuditLeaf(**fields).to_bytes()


def test_consent_leaf_without_its_members_or_another_with_them_is_not_a_leaf() -> None:
    data = json.loads(leaf_bytes(_CONSENT))
    del data["consent_roles"]
    with pytest.raises(MalformedError, match="missing \\['consent_roles'\\]"):
        AuditLeaf.from_bytes(rfc8785.dumps(data))
    data = json.loads(leaf_bytes(_CONSENT))
    data["kind"] = "WITHHELD"
    with pytest.raises(MalformedError, match="unexpected"):
        AuditLeaf.from_bytes(rfc8785.dumps(data))


def test_consulted_leaf_has_its_own_members_and_round_trips() -> None:
    fields = {
        "time_ms": 1, "kind": "CONSULTED", "event_id": "e1", "event_digest": "a" * 64,
        "source_agency": "devon-cornwall-police", "recipient": "torbay-mash",
        "outcome": "READ", "reason": "SAFEGUARDING", "consulted_by": "subscriber:torbay-mash",
        "consulted_purpose": "SAFEGUARDING", "consulted_via": "page",
        "consulted_record": "ns.feed.torbay-mash/0/7",
    }
    data = leaf_bytes(fields)
    assert data == AuditLeaf(**fields).to_bytes()
    assert b'"consulted_by":"subscriber:torbay-mash"' in data
    assert AuditLeaf.from_bytes(data).consulted_record == "ns.feed.torbay-mash/0/7"
    with pytest.raises(MalformedError, match="'consulted_via' must not be empty"):
        AuditLeaf(**{**fields, "consulted_via": ""})
    with pytest.raises(MalformedError, match="belongs to a CONSULTED leaf only"):
        AuditLeaf(**{**fields, "kind": "SHARED"})
    # a leaf of another kind carrying them does not parse
    shared = AuditLeaf(**{k: v for k, v in fields.items() if not k.startswith("consulted")}
                       | {"kind": "SHARED"}).to_bytes()
    assert b"consulted" not in shared
    forged = data.replace(b'"kind":"CONSULTED"', b'"kind":"SHARED"')
    with pytest.raises(MalformedError, match="unexpected"):
        AuditLeaf.from_bytes(forged)


# -- LINKED / UNLINKED leaves ---------------------------------------------------------------
_UNLINKED = dict(
    time_ms=1_700_000_000_000, kind="UNLINKED", event_id="d-1", event_digest=_sha,
    source_agency="torbay-mash", subject=_sha, outcome="UNLINK", rule_id="identity.deciders",
    policy_digest=_sha, identity_other=_sha, identity_decided_by=_sha,
    identity_shares=["e-2 torbay-mash", "e-1 torbay-mash"],
)


def test_identity_leaf_has_its_own_members_and_round_trips() -> None:
    data = leaf_bytes(_UNLINKED)
    assert data == AuditLeaf(**_UNLINKED).to_bytes()  # type: ignore[arg-type]
    assert rfc8785.dumps(json.loads(data)) == data
    leaf = AuditLeaf.from_bytes(data)
    assert leaf.kind is LeafKind.UNLINKED
    assert leaf.identity_shares == ("e-1 torbay-mash", "e-2 torbay-mash")
    linked = AuditLeaf.from_bytes(leaf_bytes({**_UNLINKED, "kind": "LINKED",
                                              "identity_shares": []}))
    assert linked.identity_shares == ()
    shared = AuditLeaf(time_ms=1, kind=LeafKind.SHARED, event_id="e", event_digest=_sha,
                       source_agency="a")
    assert b"identity_other" not in shared.to_bytes()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"identity_other": None}, "identity_other"),
        ({"identity_other": "v1:ABC"}, "identity_other"),  # a pseudonym in clear: refused
        ({"identity_decided_by": "Alex Worker"}, "identity_decided_by"),  # a name in clear
        ({"identity_shares": "e-1 mash"}, "identity_shares"),
        ({"kind": "SHARED"}, "belongs to a LINKED or UNLINKED leaf only"),
    ],
)
def test_identity_leaf_refuses_what_is_wrong(change: dict[str, Any], says: str) -> None:
    fields = {**_UNLINKED, **change}
    with pytest.raises(MalformedError, match=says):
        leaf_bytes(fields)
    with pytest.raises(MalformedError, match=says):
        AuditLeaf(**fields).to_bytes()
