"""Audit leaves: one per routing decision, canonical bytes, no personal data in clear.

A leaf's bytes are the RFC 8785 (JCS) canonical JSON of its fields plus
``"v": 1``; those exact bytes are the Merkle leaf data (RFC 9162 §2.1.1 hashes
``0x00 || bytes``). Every value is a string, an integer in the IEEE-754 safe
range, ``null`` or an array of strings, so any JCS implementation reproduces
the bytes. A leaf the router writes for the police exploitation team from the
example event ``tests/data/events/missing_episode.json`` under the example
policy (pseudonym key ``b"k" * 32``), wrapped here (the real bytes have no
whitespace; ``tests/test_audit_leaf.py`` checks it)::

    {"consent_ref":null,"data_classes_shared":["concern_summary","identity",
    "location","metadata","police","pseudonym","social_care","third_party"],
    "delivered_digest":"b3fbd5ed195a72e56e4314bc08f43ccba268a639e1ae1d10c2d28b77d7f139ea",
    "event_digest":"a657f882d9ff1057b083a8792c1f1bc492b569e738b00ecce9c071f785af8de2",
    "event_id":"3f6c1a52-8d0e-4c1b-9a47-2e5b7d9f0c11",
    "fields_redacted":["reporter.contact","reporter.name","reporter.organisation"],
    "kind":"SHARED","lawful_basis":"LAW_ENFORCEMENT_DPA2018_SCH8_PARA4",
    "obligations":[],"outcome":"SHARE",
    "policy_digest":"7913698aba54babfd782e45c02d2b33edaed10cdea3ca91cf84b44d318ed88e7",
    "reason":"SHARED_WITHOUT_CONSENT","recipient":"dc-police-exploitation",
    "rule_id":"police-exploitation-intelligence","source_agency":"devon-cornwall-police",
    "subject":"c3d7feabdc4d79a5c0ff2e1627fbbfce34ed3132d0a819d185ccaa8e93e92d5b",
    "time_ms":1795000000000,"v":1}

``reason`` is the decision's reason code (its text stays in the decision);
``subject`` is the keyed pseudonym of the child, ``event_digest`` and
``delivered_digest`` the SHA-256 of the inbound event and of the copy written
to the recipient's feed, ``policy_digest`` the version of the policy applied
(these two change with every edit of the example policy).

A leaf does not carry its own index. Several router processes write leaves to
one audit partition, each inside its own Kafka transaction, so no router can
know where its leaves will land. A leaf's index is its *position*: the order of
committed leaves in the shard's audit partition, message by message, leaf by
leaf within a batch. The checkpointer (:mod:`broker.audit.checkpointer`) reads
committed leaves in that order and the signed checkpoints fix it; a deleted,
inserted or reordered leaf changes the root (RFC 9162 §2.1.1) and no longer
matches them.

A ``CONSENT`` leaf records a consent record the router applied (``outcome``
GIVEN, REFUSED or WITHDRAWN; ``event_id`` and ``event_digest`` are the
record's, ``source_agency`` its recorder, ``rule_id`` the policy entitlement
that allowed it, ``consent_ref`` the record it replaced) or the expiry of one
when a decision first finds it lapsed (``outcome`` EXPIRED). It alone has four
more members, ``consent_purpose``, ``consent_roles``, ``consent_data_classes``
and ``consent_expires_ms`` (null if it never lapses): ids, role and class
names and a time, never personal data. Every other kind has none of them, so
their bytes are as before. The router rebuilds its consent state from these
leaves alone, so a record it refused never counts, after a restart either.

A ``CONSULTED`` leaf records one feed record handed to a reader (the gateway's
feed pages and stream, the workspace's chronology and concern pages), written
before the record is shown (:mod:`broker.gateway.consultations`). ``event_id``
is the record's event, ``recipient`` the subscriber whose feed it is,
``source_agency`` the event's source where the reader could see it (else
empty), ``event_digest`` the SHA-256 of the copy's bytes as read (the SHARED
leaf's ``delivered_digest``) or, for a reader holding only the decoded copy,
of ``consulted_record``. It alone has four more members: ``consulted_by`` (the
principal, ``subscriber:mash`` or ``agency:x``; a person as ``user:`` and the
keyed HMAC of the user name, never the name), ``consulted_purpose`` (one of the
subscriber's purposes in the policy), ``consulted_via`` (``page``, ``stream``,
``workspace``) and ``consulted_record`` (``topic/partition/offset``).

``LINKED``, ``UNLINKED`` and ``KEPT_APART`` leaves record a person's identity
decision the router applied (:mod:`broker.routing.identity_decisions`): ``event_id`` and
``event_digest`` are the decision's, ``source_agency`` the deciding
subscriber, ``subject`` the keyed pseudonym of the child that stays,
``rule_id`` ``identity.deciders``. They alone have three more members:
``identity_other`` (the keyed pseudonym of the child merged in or split out),
``identity_decided_by`` (a keyed digest of the person's name, never the name)
and ``identity_shares`` (UNLINKED: every share made under the merged identity
since the link, ``<event id> <recipient>``, so whoever received a merged
chronology can be told; LINKED and KEPT_APART: empty). A KEPT_APART leaf
records that a review item's two children are two: ``subject`` the candidate,
``identity_other`` the provisional child; the index is unchanged.

A ``REVIEW_RAISED`` leaf records a review item the router raised for two
children two of its instances named at the same moment, each not yet knowing
the other's (:func:`broker.routing.identity_decisions.pair_reviews`):
``event_id`` is the review id, ``event_digest`` the SHA-256 of the item's
bytes, ``source_agency`` the agency whose event started the child learned,
``subject`` the keyed pseudonym of the candidate, ``outcome`` ``REVIEW``,
``rule_id`` ``identity.review_above``. It alone has one more member,
``identity_other``: the keyed pseudonym of the provisional child. (An event's
own review item needs no leaf of its own: the event's leaves carry its
provisional pseudonym.)

A ``REFUSED`` leaf records a caller the gateway refused (403) because it
tried to act as another principal: publish as another agency, read or
acknowledge another subscriber's feed, read another agency's receipts
(:func:`broker.gateway.auth.require`). ``event_id`` is empty (an id in a
refused request is the caller's claim, not an event), ``event_digest`` the
SHA-256 of the refused request's body where the gateway had read it (a
publish), else of no bytes,
``source_agency`` the agency or ``recipient`` the subscriber whose name was
used, ``outcome`` ``FORBIDDEN``, ``reason`` what was attempted (``publish
events``, ``read the feed``, ...). It alone has one more member,
``refused_by``: the authenticated caller (``agency:x``, ``subscriber:y``;
a person as ``user:`` and the keyed HMAC of the name, as ``consulted_by``).

A ``SIGNED_FOR`` leaf records an event the gateway signed for an agency whose
policy entry delegates signing to it (``signing: gateway``), written before
the event is sent (:mod:`broker.gateway.publishing`): ``event_id`` the
event's, ``event_digest`` the SHA-256 of the signed bytes (the receipt's
digest), ``source_agency`` the agency, ``outcome`` ``SIGNED``, ``reason``
``signing: gateway``. It has no members of its own. An event the agency
signed itself has no such leaf, so the log tells which signature is whose.

``event_id`` may be empty: a quarantined message whose bytes could not be
decoded has no event id to give (its ``event_digest`` is still the SHA-256 of
the bytes).

Several leaves travel in one Kafka message as a *batch* (see :func:`encode_batch`).
The leaf, not the message, is the unit of the tree.

The router does not build an :class:`AuditLeaf` per decision: it writes the
same bytes from checked templates (:mod:`broker.audit.leaf_template`).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

from broker._jcs import (
    MAX_SAFE_INTEGER,
    CanonicalizationError,
    canonicalize_trusted,
)
from broker.audit.exceptions import MalformedError

__all__ = [
    "AUDIT_MESSAGE_BUDGET",
    "BATCH_MAGIC",
    "AuditLeaf",
    "SubjectPseudonymiser",
    "audit_encoder",
    "batch_size",
    "LeafKind",
    "decode_batch",
    "encode_batch",
    "subject_pseudonym",
]

LEAF_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_SUBJECT_DOMAIN = b"safeshare/audit/subject-pseudonym/v1\x00"
_MIN_PSEUDONYM_KEY = 32


class LeafKind(StrEnum):
    """What the decision was."""

    SHARED = "SHARED"  # a minimised copy was written to the recipient's feed
    WITHHELD = "WITHHELD"  # policy decided not to share with the recipient
    QUARANTINED = "QUARANTINED"  # the event could not be processed; kept aside
    DUPLICATE = "DUPLICATE"  # an event id seen before; nothing shared
    KEY_ROTATION = "KEY_ROTATION"  # the log's signing keys changed (see broker.audit.keys)
    ACKNOWLEDGED = "ACKNOWLEDGED"  # a recipient acknowledged a share (broker.loop)
    ESCALATED = "ESCALATED"  # an overdue clock was escalated to the next tier
    NOTIFIED = "NOTIFIED"  # a referrer was told what happened to what it sent
    CONSENT = "CONSENT"  # a consent record applied (GIVEN/REFUSED/WITHDRAWN), or its expiry
    CONSULTED = "CONSULTED"  # a feed record was read (gateway, workspace): DPA 2018 s.62
    LINKED = "LINKED"  # a person linked two pseudonyms as one child
    UNLINKED = "UNLINKED"  # a person split a wrongly linked child apart again
    KEPT_APART = "KEPT_APART"  # a person decided a review item's two records are two children
    REVIEW_RAISED = "REVIEW_RAISED"  # two children two router instances named: to a person
    REFUSED = "REFUSED"  # a caller tried to act as another principal (gateway, 403)
    SIGNED_FOR = "SIGNED_FOR"  # the gateway signed an event for an agency delegating to it


def subject_pseudonym(key: bytes, subject_id: str) -> str:
    """Keyed pseudonym of a subject: hex HMAC-SHA256 (RFC 2104) with a domain prefix.

    ``HMAC-SHA256(key, "safeshare/audit/subject-pseudonym/v1" || 0x00 || UTF-8(subject_id))``.
    The prefix keeps these values apart from any other use of the same key.
    """
    if len(key) < _MIN_PSEUDONYM_KEY:
        raise ValueError(f"the pseudonym key needs at least {_MIN_PSEUDONYM_KEY} bytes")
    mac = _hmac.HMAC(key, hashes.SHA256())
    mac.update(_SUBJECT_DOMAIN + subject_id.encode("utf-8"))
    return mac.finalize().hex()


class SubjectPseudonymiser:
    """:func:`subject_pseudonym` with its key set once (HMAC state copied per call)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_PSEUDONYM_KEY:
            raise ValueError(f"the pseudonym key needs at least {_MIN_PSEUDONYM_KEY} bytes")
        self._keyed = _hmac.HMAC(key, hashes.SHA256())
        self._keyed.update(_SUBJECT_DOMAIN)

    def __call__(self, subject_id: str) -> str:
        mac = self._keyed.copy()
        mac.update(subject_id.encode("utf-8"))
        return mac.finalize().hex()


def _fail(name: str, why: str) -> MalformedError:
    return MalformedError(f"audit leaf field {name!r} {why}")


def _str(name: str, v: object) -> str:
    if not isinstance(v, str):
        raise _fail(name, f"must be a string, not {type(v).__name__}")
    return v


def _int(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_SAFE_INTEGER:
        raise _fail(name, f"must be an integer in 0..2**53-1, not {v!r}")
    return v


def _hex64(name: str, v: object, *, empty_ok: bool = False) -> str:
    s = _str(name, v)
    if not (_HEX64.match(s) or (empty_ok and s == "")):
        raise _fail(name, "must be 64 lowercase hex digits (a SHA-256 digest)")
    return s


def _strings(name: str, v: object, *, sort: bool) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, list | tuple):
        raise _fail(name, "must be a list of strings")
    items = tuple(_str(name, x) for x in v)
    return tuple(sorted(set(items))) if sort else items


@dataclass(frozen=True)
class AuditLeaf:
    """One audited decision. No personal data: subject is a keyed pseudonym, payloads are digests.

    ``data_classes_shared`` and ``fields_redacted`` are kept sorted and
    de-duplicated; ``obligations`` keep their order.
    """

    time_ms: int
    kind: LeafKind
    event_id: str
    event_digest: str
    source_agency: str
    recipient: str = ""
    outcome: str = ""
    rule_id: str = ""
    lawful_basis: str = ""
    data_classes_shared: Sequence[str] = ()
    fields_redacted: Sequence[str] = ()
    policy_digest: str = ""
    consent_ref: str | None = None
    delivered_digest: str | None = None
    subject: str = ""
    reason: str = ""
    obligations: Sequence[str] = field(default=())
    # Members of a CONSENT leaf only (see the module docstring).
    consent_purpose: str | None = None
    consent_roles: Sequence[str] | None = None
    consent_data_classes: Sequence[str] | None = None
    consent_expires_ms: int | None = None
    # Members of a CONSULTED leaf only (see the module docstring).
    consulted_by: str | None = None
    consulted_purpose: str | None = None
    consulted_via: str | None = None
    consulted_record: str | None = None
    # Members of a LINKED, UNLINKED or KEPT_APART leaf only (see the module docstring).
    identity_other: str | None = None
    identity_decided_by: str | None = None
    identity_shares: Sequence[str] | None = None
    # The member of a REFUSED leaf only (see the module docstring).
    refused_by: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _int("time_ms", self.time_ms)
        try:
            set_(self, "kind", LeafKind(self.kind))
        except ValueError as exc:
            raise _fail("kind", f"must be one of {[k.value for k in LeafKind]}") from exc
        if self.kind is LeafKind.CONSENT:
            if not _str("consent_purpose", self.consent_purpose):
                raise _fail("consent_purpose", "must name the purpose of a CONSENT leaf")
            for name in ("consent_roles", "consent_data_classes"):
                set_(self, name, _strings(name, getattr(self, name), sort=True))
            if self.consent_expires_ms is not None:
                _int("consent_expires_ms", self.consent_expires_ms)
        else:
            for name in _CONSENT_FIELDS:
                if getattr(self, name) is not None:
                    raise _fail(name, "belongs to a CONSENT leaf only")
        if self.kind is LeafKind.CONSULTED:
            for name in _CONSULTED_FIELDS:
                if not _str(name, getattr(self, name)):
                    raise _fail(name, "must not be empty in a CONSULTED leaf")
        else:
            for name in _CONSULTED_FIELDS:
                if getattr(self, name) is not None:
                    raise _fail(name, "belongs to a CONSULTED leaf only")
        if self.kind in _IDENTITY_KINDS:
            _hex64("identity_other", self.identity_other)
            _hex64("identity_decided_by", self.identity_decided_by)
            set_(self, "identity_shares",
                 _strings("identity_shares", self.identity_shares, sort=True))
        else:
            if self.kind is LeafKind.REVIEW_RAISED:
                _hex64("identity_other", self.identity_other)
            elif self.identity_other is not None:
                raise _fail("identity_other", "belongs to a LINKED, UNLINKED or KEPT_APART leaf"
                            " only, or a REVIEW_RAISED one")
            for name in ("identity_decided_by", "identity_shares"):
                if getattr(self, name) is not None:
                    raise _fail(name, "belongs to a LINKED, UNLINKED or KEPT_APART leaf only")
        if self.kind is LeafKind.REFUSED:
            if not _str("refused_by", self.refused_by):
                raise _fail("refused_by", "must name the caller in a REFUSED leaf")
        elif self.refused_by is not None:
            raise _fail("refused_by", "belongs to a REFUSED leaf only")
        for name in (
            "event_id",
            "source_agency",
            "recipient",
            "outcome",
            "rule_id",
            "lawful_basis",
            "reason",
        ):
            _str(name, getattr(self, name))
        _hex64("event_digest", self.event_digest)
        _hex64("policy_digest", self.policy_digest, empty_ok=True)
        _hex64("subject", self.subject, empty_ok=True)
        if self.consent_ref is not None:
            _str("consent_ref", self.consent_ref)
        if self.delivered_digest is not None:
            _hex64("delivered_digest", self.delivered_digest)
        set_(
            self,
            "data_classes_shared",
            _strings("data_classes_shared", self.data_classes_shared, sort=True),
        )
        set_(self, "fields_redacted", _strings("fields_redacted", self.fields_redacted, sort=True))
        set_(self, "obligations", _strings("obligations", self.obligations, sort=False))

    @property
    def refused_as(self) -> str | None:
        """Whom a REFUSED leaf's caller tried to act as (``agency:x`` from
        ``source_agency``, else ``subscriber:y`` from ``recipient``); None for
        every other kind."""
        if self.kind is not LeafKind.REFUSED:
            return None
        if self.source_agency:
            return f"agency:{self.source_agency}"
        return f"subscriber:{self.recipient}"

    def to_json_value(self) -> dict[str, Any]:
        """The leaf as a JSON object (before canonicalisation)."""
        d: dict[str, Any] = {name: getattr(self, name) for name in _FIELD_ORDER}
        if self.kind is LeafKind.CONSENT:
            d.update((name, getattr(self, name)) for name in _CONSENT_FIELDS)
        elif self.kind is LeafKind.CONSULTED:
            d.update((name, getattr(self, name)) for name in _CONSULTED_FIELDS)
        elif self.kind in _IDENTITY_KINDS:
            d.update((name, getattr(self, name)) for name in _IDENTITY_FIELDS)
        elif self.kind is LeafKind.REVIEW_RAISED:
            d["identity_other"] = self.identity_other
        elif self.kind is LeafKind.REFUSED:
            d["refused_by"] = self.refused_by
        d["kind"] = self.kind.value
        d["v"] = LEAF_VERSION
        return d

    def to_bytes(self) -> bytes:
        """Canonical bytes (RFC 8785): the Merkle leaf data."""
        try:
            # Field names are ASCII and __post_init__ checked every value, so
            # the fast canonicaliser applies (tests cross-check the strict one).
            return canonicalize_trusted(self.to_json_value())
        except CanonicalizationError as exc:
            raise MalformedError(
                f"audit leaf of event {self.event_id!r} cannot be canonicalised: {exc}"
            ) from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> AuditLeaf:
        """Parse canonical leaf bytes; anything not byte-for-byte canonical is refused.

        The check is by construction: parse, validate every field, re-encode,
        and require the very same bytes. Whitespace, member order, escapes,
        duplicate members, floats or unsorted lists all change the bytes.
        """
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MalformedError(f"audit leaf is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise MalformedError("audit leaf is not a JSON object")
        if value.get("v") != LEAF_VERSION or isinstance(value.get("v"), bool | float):
            raise MalformedError(f"audit leaf version {value.get('v')!r} is not {LEAF_VERSION}")
        keys = set(value)
        keys.discard("v")
        kind = value.get("kind")
        expected = _FIELD_NAMES | (_KIND_NAMES.get(kind, frozenset())
                                   if isinstance(kind, str) else frozenset())
        if keys != expected:
            missing, extra = sorted(expected - keys), sorted(keys - expected)
            raise MalformedError(f"audit leaf fields wrong: missing {missing}, unexpected {extra}")
        del value["v"]
        leaf = cls(**value)
        if leaf.to_bytes() != data:
            raise MalformedError("audit leaf is not in RFC 8785 canonical form")
        return leaf


_CONSENT_FIELDS = ("consent_purpose", "consent_roles", "consent_data_classes", "consent_expires_ms")
_CONSENT_NAMES = frozenset(_CONSENT_FIELDS)
_CONSULTED_FIELDS = ("consulted_by", "consulted_purpose", "consulted_via", "consulted_record")
_CONSULTED_NAMES = frozenset(_CONSULTED_FIELDS)
_IDENTITY_FIELDS = ("identity_other", "identity_decided_by", "identity_shares")
_IDENTITY_NAMES = frozenset(_IDENTITY_FIELDS)
_IDENTITY_KINDS = frozenset({LeafKind.LINKED, LeafKind.UNLINKED, LeafKind.KEPT_APART})
_REFUSED_NAMES = frozenset({"refused_by"})
#: The members a kind has beyond the common ones.
_KIND_NAMES: dict[object, frozenset[str]] = {
    "CONSENT": _CONSENT_NAMES, "CONSULTED": _CONSULTED_NAMES,
    "LINKED": _IDENTITY_NAMES, "UNLINKED": _IDENTITY_NAMES, "KEPT_APART": _IDENTITY_NAMES,
    "REVIEW_RAISED": frozenset({"identity_other"}), "REFUSED": _REFUSED_NAMES,
}
_FIELD_ORDER = tuple(
    f.name for f in fields(AuditLeaf)
    if f.name not in _CONSENT_NAMES | _CONSULTED_NAMES | _IDENTITY_NAMES | _REFUSED_NAMES
)
_FIELD_NAMES = frozenset(_FIELD_ORDER)
_REQUIRED_FIELDS = frozenset(
    f.name for f in fields(AuditLeaf) if f.default is MISSING and f.default_factory is MISSING
)


# -- batch framing ----------------------------------------------------------------

#: Batch header: magic ``SSAB`` (Safeshare Audit Batch) and format version 1.
BATCH_MAGIC = b"SSAB\x01"
_U32 = struct.Struct(">I")
MAX_BATCH_LEAVES = 100_000
MAX_LEAF_BYTES = 1 << 20


def encode_batch(leaves: Sequence[AuditLeaf | bytes]) -> bytes:
    """Frame leaves for one Kafka message.

    Layout (all integers unsigned 32-bit big-endian)::

        "SSAB" 0x01 | count | len(leaf 0) | leaf 0 bytes | len(leaf 1) | ...

    Leaves appear in log order (their order in the tree); each is a leaf's
    canonical bytes.
    """
    if len(leaves) > MAX_BATCH_LEAVES:
        raise MalformedError(f"a batch holds at most {MAX_BATCH_LEAVES} leaves")
    parts = [BATCH_MAGIC, _U32.pack(len(leaves))]
    for leaf in leaves:
        data = leaf.to_bytes() if isinstance(leaf, AuditLeaf) else leaf
        if not 0 < len(data) <= MAX_LEAF_BYTES:
            raise MalformedError(f"a leaf has 1..{MAX_LEAF_BYTES} bytes, not {len(data)}")
        parts.append(_U32.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


#: Keep one audit message well under Kafka's default 1 MiB message limit.
AUDIT_MESSAGE_BUDGET = 512 * 1024


def audit_encoder(leaves: Sequence[bytes]) -> list[bytes]:
    """Leaves (their canonical bytes) as batch messages for the audit topic, in
    order, each within :data:`AUDIT_MESSAGE_BUDGET`: how every writer of the
    topic frames them (the router, broker.audit.leaf_writer's bytes; the
    gateway's recorder, thousands of CONSULTED leaves for one long read)."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for data in leaves:
        if batch and size + len(data) + 4 > AUDIT_MESSAGE_BUDGET:
            out.append(encode_batch(batch))  # raises MalformedError for an oversized leaf
            batch, size = [], 0
        batch.append(data)
        size += len(data) + 4
    if batch:
        out.append(encode_batch(batch))
    return out


def batch_size(message: bytes) -> int | None:
    """How many leaves a batch message says it holds (its header), or None if it
    is not a batch. For a reader that trusts the writer; :func:`decode_batch`
    checks every length."""
    if not message.startswith(BATCH_MAGIC) or len(message) < len(BATCH_MAGIC) + 4:
        return None
    (count,) = _U32.unpack_from(message, len(BATCH_MAGIC))
    return count if count <= MAX_BATCH_LEAVES else None


def decode_batch(message: bytes) -> list[bytes]:
    """Split a batch message into leaf byte strings (not yet parsed or trusted)."""
    if not message.startswith(BATCH_MAGIC):
        raise MalformedError("not an audit batch: bad magic or version")
    pos = len(BATCH_MAGIC)
    if len(message) < pos + 4:
        raise MalformedError("audit batch truncated in its header")
    (count,) = _U32.unpack_from(message, pos)
    pos += 4
    if count > MAX_BATCH_LEAVES:
        raise MalformedError(f"audit batch claims {count} leaves; at most {MAX_BATCH_LEAVES}")
    out: list[bytes] = []
    for i in range(count):
        if len(message) < pos + 4:
            raise MalformedError(f"audit batch truncated before leaf {i} of {count}")
        (n,) = _U32.unpack_from(message, pos)
        pos += 4
        if not 0 < n <= MAX_LEAF_BYTES or len(message) < pos + n:
            raise MalformedError(f"audit batch leaf {i} of {count} has a bad length {n}")
        out.append(message[pos : pos + n])
        pos += n
    if pos != len(message):
        raise MalformedError(f"audit batch has {len(message) - pos} bytes after its last leaf")
    return out
