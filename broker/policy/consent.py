"""Consent state: the latest applied consent record per child and purpose.

A consent record says, for one child (subject pseudonym) and one purpose, that
consent was GIVEN, REFUSED or WITHDRAWN, for a scope (recipient roles and data
classes; an empty list means "all") and possibly until an expiry time.

Only the router changes this state, and only with records it accepted: from
the recording agency's own consent topic, signed if the policy says so, and
entitled by the policy's ``consent`` section (broker.routing.core). Each one
applied is a CONSENT audit leaf written in the same transaction, and the state
is rebuilt from those leaves (:meth:`ConsentStore.put_keyed`), never from the
consent topics, so a record the router refused never counts, after a restart
either. A tombstone ends nothing: consent ends by a WITHDRAWN record or expiry.

A later record for the same subject and purpose replaces the earlier one,
whatever its status. So a partial withdrawal is a new GIVEN record with a
narrower scope; a WITHDRAWN record leaves no consent for any role.

The store is keyed by ``subject_key(pseudonym)``: in the router the keyed HMAC
the audit leaves carry, so leaves and events find the same entry.

A child a person linked (broker/identity/decisions.py) is one child known by
several pseudonyms: every record of each counts, and the latest applied one
for a purpose decides (``link_subjects_with``). So a withdrawal recorded under
a pseudonym before the link is not forgotten by the link; an unlink gives each
child back only its own records. Consent is
looked up when an event is routed, never cached in a decision, so a withdrawal
stops every later share that relied on it (UK GDPR Art 7(3)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from broker.policy.model import Agency, ConsentRecorder

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
    recorder: str = ""  # the agency that recorded it (its consent topic's owner)
    digest: str = ""  # SHA-256 of the record's bytes as received, for the audit

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
            recorder=str((event.get("source") or {}).get("agency_id") or ""),
        )

    def in_force(self, now_ms: int) -> bool:
        """Still binding at ``now_ms``: a withdrawal always, consent or refusal until expiry."""
        return (
            self.status == "WITHDRAWN" or self.expires_at_ms is None or now_ms < self.expires_at_ms
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


@dataclass(frozen=True)
class ConsentVerdict:
    """Whether the policy entitles a consent record: ``problem`` None if it does, with
    the entitlement (``rule_id``) and a reason for the audit; else why not."""

    rule_id: str = ""
    reason: str = ""
    problem: str | None = None


def judge_consent(
    recorders: Iterable[ConsentRecorder],
    agency: Agency | None,
    *,
    local_authority: str,
    purpose: str,
    status: str,
    previous: ConsentRecord | None,
    now_ms: int,
) -> ConsentVerdict:
    """May ``agency`` record this consent record (the policy's ``consent`` section)?

    Yes only if the agency is registered, the child is of one of its local
    authorities, an entitlement names the agency and the purpose, and the
    record would not replace one still in force that another agency made,
    unless an entitlement of the agency for that purpose has ``withdraw_others``.
    Default deny: no entitlement, no consent record.
    """
    if agency is None:
        return ConsentVerdict(problem="the recording agency is not registered in the policy")
    if local_authority not in agency.local_authorities:
        return ConsentVerdict(
            problem=f"agency {agency.id!r} records consent only for children of its own local"
            f" authorities ({', '.join(sorted(agency.local_authorities))}), not"
            f" {local_authority or '(none)'}"
        )
    entitled = [r for r in recorders if agency.id in r.agencies and purpose in r.purposes]
    if not entitled:
        return ConsentVerdict(
            problem=f"agency {agency.id!r} is not entitled to record consent for purpose"
            f" {purpose!r} (policy: consent.recorders)"
        )
    if previous is not None and previous.recorder != agency.id and previous.in_force(now_ms):
        over = [r for r in entitled if r.withdraw_others]
        if not over:
            return ConsentVerdict(
                problem=f"a {status} record would replace consent record {previous.record_id}"
                f" ({previous.status}, recorded by {previous.recorder or 'an unknown agency'!r}),"
                f" which only that agency, or one the policy lets withdraw others' records for"
                f" {purpose!r}, may"
            )
        return ConsentVerdict(
            rule_id=over[0].id,
            reason=f"{status} for {purpose} recorded by {agency.id} over record"
            f" {previous.record_id} of {previous.recorder} (entitlement {over[0].id!r},"
            " withdraw_others)",
        )
    return ConsentVerdict(
        rule_id=entitled[0].id,
        reason=f"{status} for {purpose} recorded by {agency.id} (entitlement {entitled[0].id!r})",
    )


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


#: How binding a record's status is, for two applied at the same moment.
_BINDING = {"WITHDRAWN": 2, "REFUSED": 1, "GIVEN": 0}


def _rank(applied_at: int | None, entry: _Entry | None) -> tuple[int, int]:
    """Order of the records of one child's pseudonyms: the latest applied decides."""
    if entry is None or entry.state.record is None:
        return (-1, -1)
    return (applied_at or 0, _BINDING.get(entry.state.record.status, 0))


class ConsentStore:
    """Latest consent record per (subject key, purpose); pure and in memory.

    ``subject_key`` maps an event's pseudonym to the store's key (identity by
    default; the router's keyed HMAC, see the module docstring). Changes since
    :meth:`begin` are journaled, so a transaction that aborts takes its
    records back (:meth:`rollback`). Not thread-safe: one router loop owns it.
    """

    def __init__(
        self,
        records: Iterable[ConsentRecord] = (),
        *,
        subject_key: Callable[[str], str] | None = None,
    ) -> None:
        # (subject key, purpose) -> the latest record's entry; the record is entry.state.record
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._applied_at: dict[tuple[str, str], int] = {}
        self._subject_key = subject_key
        self._linked: Callable[[str], Iterable[str]] | None = None
        self._last: tuple[str, str] = ("", "")  # the last subject and its key: one HMAC per event
        self._journal: list[tuple[tuple[str, str], _Entry | None, int | None]] = []
        # Record ids whose lapse a decision found and the audit has not yet recorded.
        self._expired: dict[str, tuple[str, ConsentRecord]] = {}
        self._expiry_noted: set[str] = set()
        self._noted_since_begin: list[str] = []
        for record in records:
            self.put(record)

    def __len__(self) -> int:
        return len(self._entries)

    def key_subjects_with(self, subject_key: Callable[[str], str]) -> None:
        """Key this (empty) store by ``subject_key`` of each pseudonym (the router's HMAC)."""
        if self._entries and subject_key is not self._subject_key:
            raise ValueError("a store holding records cannot change how it keys subjects")
        self._subject_key = subject_key
        self._last = ("", "")

    def link_subjects_with(self, linked: Callable[[str], Iterable[str]]) -> None:
        """``linked(pseudonym)``: the other pseudonyms of the same child (a person
        linked them); their records count for it too (module docstring)."""
        self._linked = linked

    def key_of(self, subject: str) -> str:
        """The store's key for an event's pseudonym."""
        if self._subject_key is None:
            return subject
        last_subject, last_key = self._last
        if subject == last_subject and last_key:
            return last_key
        key = self._subject_key(subject)
        self._last = (subject, key)
        return key

    # -- changes, journaled ---------------------------------------------------------
    def begin(self) -> None:
        """Start a transaction: what is applied from now on can be rolled back."""
        self._journal.clear()
        self._noted_since_begin.clear()

    def rollback(self) -> None:
        """Take back every change since :meth:`begin` (the transaction aborted)."""
        while self._journal:
            key, entry, applied_at = self._journal.pop()
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry
            if applied_at is None:
                self._applied_at.pop(key, None)
            else:
                self._applied_at[key] = applied_at
        self._expiry_noted.difference_update(self._noted_since_begin)
        self._noted_since_begin.clear()
        self._expired.clear()

    def _set(self, key: tuple[str, str], entry: _Entry | None, applied_at_ms: int) -> None:
        self._journal.append((key, self._entries.get(key), self._applied_at.get(key)))
        if entry is None:
            self._entries.pop(key, None)
            self._applied_at.pop(key, None)
        else:
            self._entries[key] = entry
            self._applied_at[key] = applied_at_ms

    def put(self, record: ConsentRecord, *, applied_at_ms: int = 0) -> None:
        """Record ``record``, replacing any earlier record for its subject and purpose."""
        self._set((self.key_of(record.subject), record.purpose), _entry(record), applied_at_ms)

    def apply(self, event: Mapping[str, Any]) -> ConsentRecord:
        """Apply a ConsentRecord event (``policy explain``, tests); returns its record."""
        record = ConsentRecord.from_event(event)
        self.put(record)
        return record

    def put_keyed(self, subject_key: str, record: ConsentRecord, *, applied_at_ms: int) -> bool:
        """Record ``record`` under a subject key already derived (a CONSENT audit leaf's
        ``subject``), unless a record applied later is held: leaves of several router
        instances arrive in a different order at each, and the later application wins
        everywhere. False if it was older than the record held."""
        key = (subject_key, record.purpose)
        held = self._applied_at.get(key)
        if held is not None and key in self._entries and applied_at_ms < held:
            return False
        self._set(key, _entry(record), applied_at_ms)
        return True

    def delete(self, subject: str, purpose: str) -> None:
        """Forget the record for ``subject`` and ``purpose`` (tests and tools; the router
        never deletes: consent ends by a withdrawal or by expiry)."""
        self._set((self.key_of(subject), purpose), None, 0)

    # -- reading -----------------------------------------------------------------
    def get(self, subject: str, purpose: str) -> ConsentRecord | None:
        """The latest record for ``subject``'s child and ``purpose`` (any of its pseudonyms)."""
        entry = self._find(subject, purpose)[1]
        return entry.state.record if entry is not None else None

    def _find(self, subject: str, purpose: str) -> tuple[str, _Entry | None]:
        """The key and entry deciding for ``subject``: its own, or the latest applied
        among the pseudonyms linked with it (a tie: the one that shares less)."""
        key = self.key_of(subject)
        entry = self._entries.get((key, purpose))
        others = () if self._linked is None else self._linked(subject)
        if not others:
            return key, entry
        best = (key, entry)
        rank = _rank(self._applied_at.get((key, purpose)), entry)
        for other in others:
            k = other if self._subject_key is None else self._subject_key(other)
            e = self._entries.get((k, purpose))
            r = _rank(self._applied_at.get((k, purpose)), e)
            if r > rank:
                best, rank = (k, e), r
        return best

    def get_keyed(self, subject_key: str, purpose: str) -> ConsentRecord | None:
        entry = self._entries.get((subject_key, purpose))
        return entry.state.record if entry is not None else None

    def lookup(self, subject: str, purpose: str, role: str, now_ms: int) -> ConsentState:
        """The consent position of ``subject`` for ``purpose`` towards a recipient ``role``.

        - no record, or a record whose role scope leaves ``role`` out: NONE;
        - WITHDRAWN: WITHDRAWN (expiry is irrelevant: it is not consent);
        - GIVEN or REFUSED at or after its expiry: EXPIRED (a lapsed consent is
          no consent; a lapsed refusal no longer binds), noted for the audit
          (:meth:`take_expired`) the first time a lookup finds it so;
        - otherwise GIVEN or REFUSED.

        The same answers as :meth:`lookup_plainly`, from states built when the
        record was put (:class:`_Entry`) rather than per call: the router asks
        once per share step of every event, and building a ``ConsentState`` and
        a ``ConsentStatus`` each time was most of the lookup's cost.
        """
        key, entry = self._find(subject, purpose)
        if entry is None:
            return NO_CONSENT
        roles, expires_at_ms, state, expired = entry
        if roles and role not in roles:
            return NO_CONSENT
        if expires_at_ms is not None and now_ms >= expires_at_ms:
            record = expired.record
            if record is not None and record.record_id not in self._expiry_noted:
                self._expired.setdefault(record.record_id, (key, record))
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

    # -- expiry, for the audit ------------------------------------------------------
    def take_expired(self) -> list[tuple[str, ConsentRecord]]:
        """(subject key, record) of each record a lookup found lapsed for the first time
        since the last call; each is then noted, so its expiry is audited once."""
        if not self._expired:
            return []
        out = list(self._expired.values())
        self._expired.clear()
        for _, record in out:
            self.note_expiry(record.record_id)
        return out

    def note_expiry(self, record_id: str) -> None:
        """The expiry of ``record_id`` is audited (a leaf written or read back)."""
        if record_id not in self._expiry_noted:
            self._expiry_noted.add(record_id)
            self._noted_since_begin.append(record_id)
