"""Leaf bytes without building an :class:`~broker.audit.leaf.AuditLeaf`: the router's path.

The router writes a leaf per subscriber decision, so it does not build each
from scratch: a :class:`LeafTemplate` holds the canonical bytes of the members
one decision shares across events, a :class:`LeafEvent` those of one event,
and :meth:`LeafTemplate.fill` checks the leaf's own values and joins the parts
into a :class:`CanonicalLeaf`. :func:`leaf_bytes` (for a dict of fields) goes
through the same parts; both give ``AuditLeaf(**fields).to_bytes()`` exactly,
and fall back to it for any value they do not vouch for (fail closed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from broker._jcs import (
    MAX_SAFE_INTEGER,
    encode_string,
)
from broker._memo import BoundedMemo
from broker.audit.exceptions import MalformedError
from broker.audit.leaf import (
    _CONSENT_NAMES,
    _CONSULTED_NAMES,
    _FIELD_NAMES,
    _FIELD_ORDER,
    _IDENTITY_NAMES,
    _REFUSED_NAMES,
    _REQUIRED_FIELDS,
    LEAF_VERSION,
    AuditLeaf,
    LeafKind,
)

__all__ = ["CanonicalLeaf", "LeafEvent", "LeafTemplate", "leaf_bytes"]


# -- the router's path: leaf bytes straight from a dict of fields ----------------------


def leaf_bytes(fields: Mapping[str, Any]) -> bytes:
    """``AuditLeaf(**fields).to_bytes()``, byte for byte, at a fraction of the cost.

    The router writes one leaf per decision, so building an :class:`AuditLeaf`
    (enum lookup, regexes, a dict, the JSON encoder) for each was a large share
    of its CPU. Here the canonical text is filled into a template whose member
    order is fixed (the names are ASCII, so RFC 8785 §3.2.3 order is plain
    sorted order) after cheap checks of each value.

    Fail closed, as the dataclass does: the fast path only writes values it
    has checked to be exactly what the dataclass accepts (plain ``str``,
    ``int``, ``list`` or ``tuple``, ``None``). Anything else — a wrong value,
    a lone surrogate, or merely an unusual type such as a ``str`` subclass —
    goes through ``AuditLeaf(**fields).to_bytes()``, which either gives the
    same bytes or raises :class:`MalformedError` with its usual message.
    Missing or unknown fields raise :class:`MalformedError` naming them (the
    dataclass itself would raise ``TypeError``).
    """
    names = fields.keys()
    if not (names <= _FIELD_NAMES and names >= _REQUIRED_FIELDS):
        if names >= _REQUIRED_FIELDS and names <= _ALL_NAMES:
            return _dataclass_bytes(fields)  # kinds with members of their own: rare
        missing = sorted(_REQUIRED_FIELDS - set(names))
        unknown = sorted(repr(n) for n in names if n not in _ALL_NAMES)
        raise MalformedError(
            f"audit leaf fields wrong: missing {missing}, unexpected [{', '.join(unknown)}]"
        )
    kind = fields["kind"]
    if kind in _OWN_MEMBERS_LIST:  # any value: it may be unhashable
        return _dataclass_bytes(fields)
    data = _template_bytes(fields)
    if data is None:
        data = _dataclass_bytes(fields)
    return data


def _dataclass_bytes(fields: Mapping[str, Any]) -> bytes:
    """The reference path, for whatever :func:`_template_bytes` does not vouch for."""
    return AuditLeaf(**fields).to_bytes()


_HEX_DIGITS = b"0123456789abcdef"
# Not CONSENT, CONSULTED, LINKED, UNLINKED, KEPT_APART, REVIEW_RAISED or REFUSED: their
# leaves have members of their own (dataclass path).
_OWN_MEMBERS_LIST = ("CONSENT", "CONSULTED", "LINKED", "UNLINKED", "KEPT_APART",
                     "REVIEW_RAISED", "REFUSED")
_OWN_MEMBERS = frozenset(_OWN_MEMBERS_LIST)
_ALL_NAMES = (_FIELD_NAMES | _CONSENT_NAMES | _CONSULTED_NAMES | _IDENTITY_NAMES
              | _REFUSED_NAMES)
_KIND_TEXT = {kind.value: f'"{kind.value}"' for kind in LeafKind if kind not in _OWN_MEMBERS}
_KIND_TYPES = (str, LeafKind)
_LIST_TYPES = (list, tuple)


# The router's data classes and redacted fields come from a few policy rules, so
# the same few lists recur: their JSON is kept, keyed by the tuple of (plain) strings.
_set_texts: BoundedMemo[tuple[str, ...], str] = BoundedMemo(4096)


def _plain_strings(items: Any) -> bool:
    """True if ``items`` is a list or tuple of plain ``str``."""
    return type(items) in _LIST_TYPES and all(type(item) is str for item in items)


def _strings_text(items: Any) -> str | None:
    """A list of plain strings as JSON, in order; None if it is not one."""
    if not _plain_strings(items):
        return None
    return "[" + ",".join(map(encode_string, items)) + "]"


def _set_text(items: Any) -> str | None:
    """A list of plain strings as JSON, sorted and de-duplicated; None if it is not one."""
    if not _plain_strings(items):
        return None
    key = tuple(items)
    text = _set_texts.get(key)
    if text is None:
        text = _set_texts.remember(key, "[" + ",".join(map(encode_string, sorted(set(key)))) + "]")
    return text


def _template_bytes(f: Mapping[str, Any]) -> bytes | None:
    """The leaf's canonical bytes if every value is a plain, valid one; None otherwise.

    One leaf through the router's template (:class:`LeafTemplate`,
    :class:`LeafEvent`, :meth:`LeafTemplate.fill`), so a dict and a template
    write the same text by construction and the property tests of
    :func:`leaf_bytes` hold both.
    """
    get = f.get
    template = LeafTemplate.checked(
        kind=f["kind"],
        recipient=get("recipient", ""),
        outcome=get("outcome", ""),
        rule_id=get("rule_id", ""),
        reason=get("reason", ""),
        policy_digest=get("policy_digest", ""),
        lawful_basis=get("lawful_basis", ""),
        data_classes_shared=get("data_classes_shared", ()),
        fields_redacted=get("fields_redacted", ()),
    )
    event = LeafEvent.checked(
        event_id=f["event_id"],
        event_digest=f["event_digest"],
        source_agency=f["source_agency"],
        subject=get("subject", ""),
    )
    if template is None or event is None:
        return None
    leaf = template.fill(
        event,
        time_ms=f["time_ms"],
        delivered_digest=get("delivered_digest"),
        consent_ref=get("consent_ref"),
        obligations=get("obligations", ()),
    )
    return None if leaf is None else leaf.data


# -- the router's path: a decision's leaves from one checked template ------------------
#
# A leaf's members in RFC 8785 §3.2.3 order (ASCII names: plain sorted order),
# by how often their values change:
#
#   consent_ref L, data_classes_shared D, delivered_digest L, event_digest E,
#   event_id E, fields_redacted D, kind D, lawful_basis D, obligations L,
#   outcome D, policy_digest D, reason D, recipient D, rule_id D,
#   source_agency E, subject E, time_ms L, v
#
# D: the same for every event one decision (subscriber, rule, grant, policy)
# applies to: a LeafTemplate, checked and written once; E: the same for every
# leaf of one event: a LeafEvent, checked and written once per event; L: per
# leaf, checked by LeafTemplate.fill. A leaf is then one join of ready bytes.

_DECISION_FIELDS = frozenset(
    ("kind", "recipient", "outcome", "rule_id", "reason", "policy_digest", "lawful_basis")
    + ("data_classes_shared", "fields_redacted")
)
_EVENT_FIELDS = frozenset(("event_id", "event_digest", "source_agency", "subject"))
_LEAF_FIELDS = frozenset(("time_ms", "delivered_digest", "consent_ref", "obligations"))
if _DECISION_FIELDS | _EVENT_FIELDS | _LEAF_FIELDS != _FIELD_NAMES:  # pragma: no cover
    raise RuntimeError("broker.audit.leaf: the template's fields are not AuditLeaf's")

_NULL_CONSENT_HEAD = b'{"consent_ref":null'
_NO_OBLIGATIONS = b"[]"
_TIME_AND_VERSION = b'%d,"v":' + str(LEAF_VERSION).encode() + b"}"


def _hex_digits(text: str) -> bool:
    """True if ``text`` is only lowercase hex digits (isascii is O(1))."""
    return text.isascii() and not text.encode().translate(None, _HEX_DIGITS)


def _utf8(text: str) -> bytes | None:
    """``text`` as UTF-8; None for a lone surrogate (the dataclass path says why)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


class CanonicalLeaf(Mapping[str, Any]):
    """A leaf as its canonical bytes (``data``), written by :meth:`LeafTemplate.fill`.

    Only ``fill`` makes these, after checking every value as :class:`AuditLeaf`
    does, so the audit encoder frames ``data`` as it is. The fields can still
    be read by name (``leaf["recipient"]``), parsed from the bytes on each
    access: for tests and tools, not for the router's loop.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def fields(self) -> dict[str, Any]:
        """The leaf's fields (lists as JSON arrays), from its bytes."""
        value: dict[str, Any] = json.loads(self.data)
        del value["v"]
        return value

    def __getitem__(self, name: str) -> Any:
        return self.fields()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELD_ORDER)

    def __len__(self) -> int:
        return len(_FIELD_ORDER)

    def __repr__(self) -> str:
        return f"CanonicalLeaf({self.data!r})"


class LeafEvent:
    """The members every leaf of one event shares (event id and digest, agency, subject),
    checked and written once. Make with :meth:`checked`."""

    __slots__ = ("_after_null", "_after_digest", "_agency_and_subject")

    def __init__(self, digest_and_id: bytes, agency_and_subject: bytes) -> None:
        # What follows the delivered digest: after null, or after a digest
        # (whose closing quote it carries, see LeafTemplate.fill).
        self._after_null = digest_and_id
        self._after_digest = b'"' + digest_and_id
        self._agency_and_subject = agency_and_subject

    @classmethod
    def checked(
        cls, *, event_id: str, event_digest: str, source_agency: str, subject: str = ""
    ) -> LeafEvent | None:
        """The event's part of its leaves, or None unless every value is plain and valid
        (then the caller takes the dict path, which gives the same bytes or says what
        is wrong)."""
        if not (
            type(event_id) is str
            and type(source_agency) is str
            and type(event_digest) is str
            and len(event_digest) == 64
            and type(subject) is str
            and len(subject) in (0, 64)
            and _hex_digits(event_digest + subject)
        ):
            return None
        # A digest needs no escaping: hex digits in quotes.
        digest_and_id = _utf8(
            f',"event_digest":"{event_digest}","event_id":{encode_string(event_id)}'
        )
        agency_and_subject = _utf8(
            f',"source_agency":{encode_string(source_agency)},"subject":"{subject}","time_ms":'
        )
        if digest_and_id is None or agency_and_subject is None:
            return None
        return cls(digest_and_id, agency_and_subject)


class LeafTemplate:
    """The members one decision's leaves share, checked and written once; :meth:`fill`
    adds an event's and a leaf's own values. Make with :meth:`checked`.

    The router keeps one per (subscriber, rule, grant, policy) decision, so a
    leaf costs a few checks and one join instead of a dict and a full
    encoding (see ``bench/bench_audit.py``).
    """

    __slots__ = ("_to_null", "_to_digest", "_redacted_to_obligations", "_outcome_to_rule")

    def __init__(self, classes: bytes, redacted_to_obligations: bytes, outcome_to_rule: bytes):
        # Up to the delivered digest's value: null, or the digest's opening quote.
        self._to_null = classes + b"null"
        self._to_digest = classes + b'"'
        self._redacted_to_obligations = redacted_to_obligations
        self._outcome_to_rule = outcome_to_rule

    @classmethod
    def checked(
        cls,
        *,
        kind: LeafKind | str,
        recipient: str = "",
        outcome: str = "",
        rule_id: str = "",
        reason: str = "",
        policy_digest: str = "",
        lawful_basis: str = "",
        data_classes_shared: Sequence[str] = (),
        fields_redacted: Sequence[str] = (),
    ) -> LeafTemplate | None:
        """The decision's template, or None unless every value is plain and valid."""
        if not (
            type(kind) in _KIND_TYPES
            and kind in _KIND_TEXT
            and type(recipient) is str
            and type(outcome) is str
            and type(rule_id) is str
            and type(reason) is str
            and type(lawful_basis) is str
            and type(policy_digest) is str
            and len(policy_digest) in (0, 64)
            and _hex_digits(policy_digest)
        ):
            return None
        classes = _set_text(data_classes_shared)
        redacted = _set_text(fields_redacted)
        if classes is None or redacted is None:
            return None
        parts = (
            _utf8(f',"data_classes_shared":{classes},"delivered_digest":'),
            _utf8(
                f',"fields_redacted":{redacted},"kind":{_KIND_TEXT[kind]}'
                f',"lawful_basis":{encode_string(lawful_basis)},"obligations":'
            ),
            _utf8(
                f',"outcome":{encode_string(outcome)},"policy_digest":"{policy_digest}"'
                f',"reason":{encode_string(reason)},"recipient":{encode_string(recipient)}'
                f',"rule_id":{encode_string(rule_id)}'
            ),
        )
        if parts[0] is None or parts[1] is None or parts[2] is None:
            return None
        return cls(parts[0], parts[1], parts[2])

    def fill(
        self,
        event: LeafEvent,
        *,
        time_ms: int,
        delivered_digest: str | None = None,
        consent_ref: str | None = None,
        obligations: Sequence[str] = (),
    ) -> CanonicalLeaf | None:
        """One leaf of ``event`` by this decision: its canonical bytes, the same as
        ``AuditLeaf(**fields).to_bytes()``; None unless every value is plain and valid."""
        if not (
            type(event) is LeafEvent and type(time_ms) is int and 0 <= time_ms <= MAX_SAFE_INTEGER
        ):
            return None
        if delivered_digest is None:
            to_delivered, delivered, after = self._to_null, b"", event._after_null
        elif (
            type(delivered_digest) is str
            and len(delivered_digest) == 64
            and delivered_digest.isascii()  # O(1); then encode cannot fail
        ):
            delivered = delivered_digest.encode()
            if delivered.translate(None, _HEX_DIGITS):
                return None
            to_delivered, after = self._to_digest, event._after_digest
        else:
            return None
        if consent_ref is None:
            head: bytes | None = _NULL_CONSENT_HEAD
        elif type(consent_ref) is str:
            head = _utf8('{"consent_ref":' + encode_string(consent_ref))
        else:
            return None
        if not obligations and type(obligations) in _LIST_TYPES:
            listed: bytes | None = _NO_OBLIGATIONS
        else:
            text = _strings_text(obligations)
            listed = None if text is None else _utf8(text)
        if head is None or listed is None:
            return None
        return CanonicalLeaf(
            b"".join(
                (
                    head,
                    to_delivered,
                    delivered,
                    after,
                    self._redacted_to_obligations,
                    listed,
                    self._outcome_to_rule,
                    event._agency_and_subject,
                    _TIME_AND_VERSION % time_ms,
                )
            )
        )


# The template must write every field of AuditLeaf, in canonical order: a field
# added to the dataclass but not to the template would silently drop out of the
# router's leaves. One leaf with every field set, and one with only the required
# ones (the template's null and empty-list shortcuts), check it at import.
_SAMPLE: dict[str, Any] = {
    "time_ms": 1,
    "kind": "SHARED",
    **{name: "0" * 64 for name in ("event_digest", "policy_digest", "delivered_digest", "subject")},
    **{name: name for name in ("event_id", "source_agency", "recipient", "outcome", "rule_id")},
    **{name: name for name in ("lawful_basis", "reason", "consent_ref")},
    **{name: [name] for name in ("data_classes_shared", "fields_redacted", "obligations")},
}
_SAMPLE_REQUIRED = {name: _SAMPLE[name] for name in _REQUIRED_FIELDS}
if any(
    _template_bytes(sample) != _dataclass_bytes(sample) for sample in (_SAMPLE, _SAMPLE_REQUIRED)
):  # pragma: no cover
    raise RuntimeError("broker.audit.leaf: leaf_bytes' template does not match AuditLeaf")
