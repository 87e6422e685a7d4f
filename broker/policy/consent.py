"""Consent state, rebuilt in memory from the compacted consent topic.

A consent record says, for one child (subject pseudonym) and one purpose, that
consent was GIVEN, REFUSED or WITHDRAWN, for a scope (recipient roles and data
classes; an empty list means "all") and possibly until an expiry time.

The consent topic is keyed by subject + purpose and compacted, so only the
latest record per key matters: :class:`ConsentStore` keeps exactly that. The
router feeds it records in topic order (``apply``) and tombstones
(``apply_tombstone``/``delete``); a later record for the same key replaces the
earlier one, whatever its status. So a partial withdrawal is expressed as a new
GIVEN record with a narrower scope; a WITHDRAWN record withdraws the consent for
every role in its scope and leaves no consent for any other role either (the
earlier GIVEN record it replaced is gone).

Consent is looked up when an event is routed, never cached in a decision, so a
withdrawal stops every later share that relied on it (UK GDPR Art 7(3): the
withdrawal does not affect what was lawfully shared before it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

KEY_SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in a pseudonym or purpose id


class ConsentStatus(StrEnum):
    """The consent position for one subject, purpose and recipient role at one time."""

    GIVEN = "GIVEN"
    REFUSED = "REFUSED"
    WITHDRAWN = "WITHDRAWN"
    EXPIRED = "EXPIRED"
    NONE = "NONE"


_RECORD_STATUSES = frozenset({"GIVEN", "REFUSED", "WITHDRAWN"})


def consent_key(subject: str, purpose: str) -> bytes:
    """The Kafka key of the consent topic: subject pseudonym and purpose."""
    return f"{subject}{KEY_SEPARATOR}{purpose}".encode()


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a time must be a datetime or int milliseconds, not bool")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in a consent record: times must be UTC-aware")
        return int(value.timestamp() * 1000)
    raise TypeError(f"a time must be a datetime or int milliseconds, not {type(value).__name__}")


@dataclass(frozen=True)
class ConsentRecord:
    """One consent record, normalised from its ConsentRecord payload event."""

    record_id: str  # the consent event's event_id: the reference the audit cites
    subject: str
    purpose: str
    status: str  # GIVEN | REFUSED | WITHDRAWN
    roles: frozenset[str] = frozenset()  # empty = every role
    data_classes: frozenset[str] = frozenset()  # empty = every data class
    expires_at_ms: int | None = None
    recorded_at_ms: int | None = None

    def __post_init__(self) -> None:
        if self.status not in _RECORD_STATUSES:
            raise ValueError(f"consent status {self.status!r} is not GIVEN, REFUSED or WITHDRAWN")

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ConsentRecord:
        """Read a ConcernEvent dict whose payload is a ``safeshare.ConsentRecord``.

        Raises ``ValueError``/``KeyError``/``TypeError`` when the event is not a
        consent record; the router quarantines such an event.
        """
        payload = event["payload"]
        if isinstance(payload, tuple):
            name, body = payload
            if name.rsplit(".", 1)[-1] != "ConsentRecord":
                raise ValueError(f"payload is {name}, not a ConsentRecord")
        else:
            body = payload
        if not isinstance(body, Mapping):
            raise TypeError("ConsentRecord payload is not a record")
        status, purpose = body.get("status"), body.get("purpose")
        if status is None or purpose is None:
            raise ValueError("a consent record needs a status and a purpose")
        subject = event["subject"]["pseudonym"]
        if not isinstance(subject, str) or not subject:
            raise ValueError("a consent record needs the subject's pseudonym")
        return cls(
            record_id=str(event["event_id"]),
            subject=subject,
            purpose=str(purpose),
            status=str(status),
            roles=frozenset(body.get("scope_roles") or ()),
            data_classes=frozenset(body.get("scope_data_classes") or ()),
            expires_at_ms=_ms(body.get("expires_at")),
            recorded_at_ms=_ms(body.get("recorded_at") or event.get("reported_at")),
        )


@dataclass(frozen=True)
class ConsentState:
    """The result of a consent lookup, with the record it rests on (None for NONE)."""

    status: ConsentStatus
    record: ConsentRecord | None = None

    @property
    def record_id(self) -> str | None:
        return self.record.record_id if self.record is not None else None

    @property
    def data_classes(self) -> frozenset[str]:
        """Data classes the consent covers; empty means all."""
        return self.record.data_classes if self.record is not None else frozenset()


NO_CONSENT = ConsentState(ConsentStatus.NONE)


class ConsentLookup(Protocol):
    """What the policy engine needs of a consent store."""

    def lookup(self, subject: str, purpose: str, role: str, now_ms: int) -> ConsentState: ...


class _Entry(NamedTuple):
    """What :meth:`ConsentStore.lookup` needs of one record, with its answers built once.

    The states are frozen, so one object per (record, status) can be handed to
    every lookup; an entry is replaced or dropped with its record (``put``,
    ``delete``), so a state never outlives a change of the record it rests on.
    Which of the two states applies depends on the time of the lookup, so that
    choice is made per call, never remembered.
    """

    roles: frozenset[str]  # the record's own object: empty = every role
    expires_at_ms: int | None  # None: the record never lapses (so for WITHDRAWN)
    state: ConsentState  # before expiry (or for good)
    expired: ConsentState  # at or after expires_at_ms; ``state`` when it cannot expire


def _entry(record: ConsentRecord) -> _Entry:
    """The entry of ``record``: the states :meth:`ConsentStore.lookup_plainly` would build."""
    if record.status == "WITHDRAWN":
        # expiry is irrelevant: a withdrawal is not consent
        withdrawn = ConsentState(ConsentStatus.WITHDRAWN, record)
        return _Entry(record.roles, None, withdrawn, withdrawn)
    state = ConsentState(ConsentStatus(record.status), record)
    if record.expires_at_ms is None:
        return _Entry(record.roles, None, state, state)
    return _Entry(
        record.roles, record.expires_at_ms, state, ConsentState(ConsentStatus.EXPIRED, record)
    )


class ConsentStore:
    """Latest consent record per (subject, purpose); pure and in memory.

    Not thread-safe: one router loop owns one store.
    """

    def __init__(self, records: Iterable[ConsentRecord] = ()) -> None:
        # (subject, purpose) -> the latest record's entry; the record is entry.state.record
        self._entries: dict[tuple[str, str], _Entry] = {}
        for record in records:
            self.put(record)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, record: ConsentRecord) -> None:
        """Record ``record``, replacing any earlier record for its subject and purpose."""
        self._entries[(record.subject, record.purpose)] = _entry(record)

    def apply(self, event: Mapping[str, Any] | None, *, key: bytes | None = None) -> None:
        """Apply one message of the consent topic: a ConsentRecord event, or a tombstone.

        A tombstone (``event`` None) deletes the record under ``key`` (see
        :func:`consent_key`); compaction will delete it from the topic too.
        """
        if event is None:
            if key is None:
                raise ValueError("a consent tombstone needs its key")
            self.apply_tombstone(key)
            return
        self.put(ConsentRecord.from_event(event))

    def apply_tombstone(self, key: bytes) -> None:
        """Delete the record under a consent-topic key (subject + purpose)."""
        subject, sep, purpose = key.decode().partition(KEY_SEPARATOR)
        if not sep:
            raise ValueError("consent key lacks the subject/purpose separator")
        self.delete(subject, purpose)

    def delete(self, subject: str, purpose: str) -> None:
        self._entries.pop((subject, purpose), None)

    def get(self, subject: str, purpose: str) -> ConsentRecord | None:
        entry = self._entries.get((subject, purpose))
        return entry.state.record if entry is not None else None

    def lookup(self, subject: str, purpose: str, role: str, now_ms: int) -> ConsentState:
        """The consent position of ``subject`` for ``purpose`` towards a recipient ``role``.

        - no record, or a record whose role scope leaves ``role`` out: NONE;
        - WITHDRAWN: WITHDRAWN (expiry is irrelevant: it is not consent);
        - GIVEN or REFUSED at or after its expiry: EXPIRED (a lapsed consent is
          no consent; a lapsed refusal no longer binds);
        - otherwise GIVEN or REFUSED.

        The same answers as :meth:`lookup_plainly`, from states built when the
        record was put (:class:`_Entry`) rather than per call: the router asks
        once per share step of every event, and building a ``ConsentState`` and
        a ``ConsentStatus`` each time was most of the lookup's cost.
        """
        entry = self._entries.get((subject, purpose))
        if entry is None:
            return NO_CONSENT
        roles, expires_at_ms, state, expired = entry
        if roles and role not in roles:
            return NO_CONSENT
        if expires_at_ms is not None and now_ms >= expires_at_ms:
            return expired
        return state

    def lookup_plainly(self, subject: str, purpose: str, role: str, now_ms: int) -> ConsentState:
        """:meth:`lookup` worked out from the record alone, a new state each call: the reference."""
        record = self.get(subject, purpose)
        if record is None or (record.roles and role not in record.roles):
            return NO_CONSENT
        if record.status == "WITHDRAWN":
            return ConsentState(ConsentStatus.WITHDRAWN, record)
        if record.expires_at_ms is not None and now_ms >= record.expires_at_ms:
            return ConsentState(ConsentStatus.EXPIRED, record)
        return ConsentState(ConsentStatus(record.status), record)
