"""Audit leaves: RFC 8785 canonical bytes, strict parsing, pseudonyms, batch framing."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
import rfc8785  # an independent RFC 8785 implementation (PyPI: rfc8785), a test dependency
from hypothesis import given, settings
from hypothesis import strategies as st

from broker._jcs import CanonicalizationError, canonicalize, parse_canonical
from broker.audit.exceptions import MalformedError
from broker.audit.leaf import (
    AUDIT_MESSAGE_BUDGET,
    BATCH_MAGIC,
    MAX_LEAF_BYTES,
    AuditLeaf,
    LeafKind,
    audit_encoder,
    decode_batch,
    encode_batch,
    subject_pseudonym,
)
from broker.audit.leaf_template import leaf_bytes

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


def test_audit_encoder_keeps_each_message_within_the_budget_and_the_order() -> None:
    """Every writer of the audit topic frames with it: a long read's thousands of
    leaves must not make one message over the broker's 1 MB limit."""
    leaves = [make_leaf(i).to_bytes() for i in range(4000)]
    messages = audit_encoder(leaves)
    assert len(messages) > 1
    assert all(len(m) <= AUDIT_MESSAGE_BUDGET + len(BATCH_MAGIC) + 4 for m in messages)
    assert [x for m in messages for x in decode_batch(m)] == leaves
    assert audit_encoder(leaves[:3]) == [encode_batch(leaves[:3])]
    assert audit_encoder([]) == []
    with pytest.raises(MalformedError, match="a leaf has 1..1048576 bytes"):
        audit_encoder([b"x" * (MAX_LEAF_BYTES + 1)])


_sha = H(b"x").hexdigest()


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


def test_refused_leaf_names_the_caller_and_round_trips() -> None:
    fields = {
        "time_ms": 1, "kind": "REFUSED", "event_id": "", "event_digest": "a" * 64,
        "source_agency": "torbay-hospital", "outcome": "FORBIDDEN", "reason": "publish events",
        "refused_by": "agency:example-academy",
    }
    data = leaf_bytes(fields)
    assert data == AuditLeaf(**fields).to_bytes()
    assert b'"refused_by":"agency:example-academy"' in data
    assert AuditLeaf.from_bytes(data).refused_by == "agency:example-academy"
    with pytest.raises(MalformedError, match="must name the caller in a REFUSED leaf"):
        AuditLeaf(**{**fields, "refused_by": ""})
    with pytest.raises(MalformedError, match="'refused_by' must be a string"):
        AuditLeaf(**{k: v for k, v in fields.items() if k != "refused_by"})
    with pytest.raises(MalformedError, match="belongs to a REFUSED leaf only"):
        AuditLeaf(**{**fields, "kind": "SHARED"})
    forged = data.replace(b'"kind":"REFUSED"', b'"kind":"WITHHELD"')
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
    kept = AuditLeaf.from_bytes(leaf_bytes({**_UNLINKED, "kind": "KEPT_APART",
                                            "outcome": "KEEP_APART", "identity_shares": []}))
    assert kept.kind is LeafKind.KEPT_APART and kept.identity_other == _sha
    shared = AuditLeaf(time_ms=1, kind=LeafKind.SHARED, event_id="e", event_digest=_sha,
                       source_agency="a")
    assert b"identity_other" not in shared.to_bytes()


def test_review_raised_leaf_names_the_other_child_keyed_and_nothing_a_decision_has() -> None:
    fields = {k: v for k, v in _UNLINKED.items()
              if k not in ("identity_decided_by", "identity_shares")}
    fields.update(kind="REVIEW_RAISED", outcome="REVIEW", rule_id="identity.review_above")
    leaf = AuditLeaf.from_bytes(leaf_bytes(fields))
    assert leaf.kind is LeafKind.REVIEW_RAISED and leaf.identity_other == _sha
    assert leaf.identity_decided_by is None and b"identity_decided_by" not in leaf.to_bytes()
    for change, says in (({"identity_other": "v1:ABC"}, "identity_other"),
                         ({"identity_decided_by": _sha}, "identity_decided_by")):
        with pytest.raises(MalformedError, match=says):
            leaf_bytes({**fields, **change})


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"identity_other": None}, "identity_other"),
        ({"identity_other": "v1:ABC"}, "identity_other"),  # a pseudonym in clear: refused
        ({"identity_decided_by": "Alex Worker"}, "identity_decided_by"),  # a name in clear
        ({"identity_shares": "e-1 mash"}, "identity_shares"),
        ({"kind": "SHARED"}, "belongs to a LINKED, UNLINKED or KEPT_APART leaf only"),
    ],
)
def test_identity_leaf_refuses_what_is_wrong(change: dict[str, Any], says: str) -> None:
    fields = {**_UNLINKED, **change}
    with pytest.raises(MalformedError, match=says):
        leaf_bytes(fields)
    with pytest.raises(MalformedError, match=says):
        AuditLeaf(**fields).to_bytes()
