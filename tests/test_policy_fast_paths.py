"""The policy's fast paths against the plain ones, and consent lookups from prebuilt states.

The router decides through exact-type fact reading, generated field walks,
remembered outcomes and consent states built when a record is put; each must
give the plain path's answer (or decline)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.policy import (
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    ConsentStore,
    Policy,
)
from broker.policy._present import fields_present
from broker.policy.vocabulary import CATEGORIES
from tests.policy_helpers import (
    DEVON,
    EXAMPLE_POLICY,
    FIELD_CLASSES,
    JUST,
    NOW,
    TORBAY,
    consent_event,
    consent_positions,
    make_event,
    odd_events,
)

H72 = 72 * 3600 * 1000




# -- the router's path, piece by piece against the plain one ----------------------
#
# decide_all reads an event's facts with exact-type code (Policy._quick_facts), finds
# the fields present with generated code (_present.compile_present) and remembers a
# share step's outcome per consent position (Policy._outcome). Each must give the
# plain path's answer or decline; these tests look for an input where one does not.


class _Record(Mapping[str, Any]):
    """A Mapping that is not a dict: the generated code must hand it to the walk."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _Name(str):
    """A union name that is a str, but not exactly one."""


class _Pair(tuple):  # type: ignore[type-arg]
    """A union value that is a tuple, but not exactly one."""


def _field_tree() -> dict[str, Any]:
    """FIELD_CLASSES as nested dicts (None at a leaf), from the test's own field map."""
    tree: dict[str, Any] = {}
    for path in FIELD_CLASSES:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None
    return tree


_SCALARS = st.one_of(st.none(), st.integers(-2, 2), st.text(max_size=2), st.booleans())


def _renamed(pair: tuple[str, Any]) -> tuple[str, Any]:
    return _Name(pair[0]), pair[1]


def _values(tree: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """Values a decoded event could hold under ``tree``, and many it could not."""
    if tree is None:  # a leaf: any value, or an array of them
        return st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2))
    keys = sorted(tree)
    fields = {k: _values(tree[k]) for k in keys}
    record = st.one_of(
        st.fixed_dictionaries(fields),  # every key: the generated code's own case
        st.fixed_dictionaries({}, optional=fields),  # keys missing: the walk's
        st.fixed_dictionaries(fields, optional={"unknown": _SCALARS}),
    )
    branch = st.sampled_from(keys).flatmap(
        lambda k: st.tuples(
            st.sampled_from([k, f"safeshare.{k}", f"a.b.{k}", "safeshare.Unknown", ""]),
            st.one_of(st.none(), _values(tree[k])),
        )
    )
    return st.one_of(
        _SCALARS,
        record,
        record.map(_Record),
        st.lists(st.one_of(st.none(), record), max_size=3),
        st.lists(st.lists(record, max_size=2), max_size=2),
        branch,
        branch.map(_renamed),
        branch.map(_Pair),
        branch.map(lambda t: (*t, None)),  # three items: no union value
        st.tuples(_SCALARS, record),  # a name that is not a str
    )


_EVENT_VALUES = st.fixed_dictionaries(
    {k: _values(v) for k, v in _field_tree().items()}, optional={"unknown": _SCALARS}
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_EVENT_VALUES, _values(_field_tree())))
def test_the_generated_fields_present_are_the_walks(value: Any) -> None:
    policy = _POLICY
    assert policy._present_compiled(value) == fields_present(value, policy._root)


def test_the_generated_fields_present_of_every_example_event() -> None:
    events = [make_event(category=c, reason="CANNOT_BE_GIVEN") for c in sorted(CATEGORIES)]
    events += [consent_event(status="GIVEN", roles=["mash_team"])]
    for event in events + odd_events():
        want = fields_present(event, _POLICY._root)
        assert want  # not vacuous
        assert _POLICY._present_compiled(event) == want


_POLICY = Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)
# Where _facts reads an event, and values to put there (or a key to delete).
_FACT_SPOTS = [
    ("event_id",),
    ("source",),
    ("source", "agency_id"),
    ("subject",),
    ("subject", "local_authority"),
    ("subject", "pseudonym"),
    ("sharing",),
    ("sharing", "no_consent_reason"),
    ("sharing", "justification"),
    ("sharing", "break_glass"),
    ("payload",),
    ("risk_level",),
    ("category",),
]
_DELETE = object()
_ODD_VALUES = st.sampled_from(
    [
        _DELETE,
        None,
        "",
        " \t",
        "HIGH",
        "SEVERE",
        _Name("CRITICAL"),
        _Name("WOULD_PREJUDICE_PROTECTION"),
        _Name(TORBAY),
        7,
        True,
        "yes",
        {},
        _Record({"agency_id": "devon-cornwall-police", "pseudonym": "child-0001"}),
        ("safeshare.HealthConcern", None),
        _Pair(("safeshare.MissingEpisode", {"police_reference": "X"})),
        (_Name("safeshare.MissingEpisode"), {}),
        "devon-cornwall-police",
        "not-registered-agency",
        "CANNOT_BE_GIVEN",
        "WOULD_PREJUDICE_PROTECTION",
        "BECAUSE",
        "MISSING_EPISODE",
        DEVON,
        TORBAY,
        "x",
    ]
)


@st.composite
def _events_at_the_edges(draw: st.DrawFn) -> Any:
    """An example event with up to three of the facts policy reads changed."""
    event = make_event(
        category=draw(st.sampled_from(["MISSING_EPISODE", "HEALTH_CONCERN", "EXPLOITATION"])),
        agency=draw(st.sampled_from(["devon-cornwall-police", "torbay-hospital"])),
        risk=draw(st.sampled_from(["LOW", "MEDIUM", "HIGH", "CRITICAL"])),
        la=draw(st.sampled_from([TORBAY, DEVON])),
        reason=draw(st.sampled_from([None, "CANNOT_BE_GIVEN", "WOULD_PREJUDICE_PROTECTION"])),
        justification=draw(st.sampled_from([None, "", JUST])),
        break_glass=draw(st.booleans()),
    )
    for spot in draw(st.lists(st.sampled_from(_FACT_SPOTS), min_size=1, max_size=3)):
        *parents, key = spot
        holder: Any = event
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue
        value = draw(_ODD_VALUES)
        if value is _DELETE:
            holder.pop(key, None)
        else:
            holder[key] = value
    return _Record(event) if draw(st.integers(0, 9)) == 0 else event


_STORES = consent_positions()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events_at_the_edges())
def test_quick_facts_are_the_plain_facts_or_decline(event: Any) -> None:
    policy = _POLICY
    quick = policy._quick_facts(event)
    assert quick is None or quick == policy._facts(event, NOW)
    for store in _STORES:
        assert policy.decide_all(event, store, NOW) == policy.decide_all_plainly(event, store, NOW)


def test_quick_facts_read_a_plain_event_and_decline_the_rest() -> None:
    # not vacuous: the fast reader does read ordinary events, and does decline odd ones
    plain = make_event(reason="WOULD_PREJUDICE_PROTECTION", justification=JUST)
    assert _POLICY._quick_facts(plain) == _POLICY._facts(plain, NOW)
    declined = [e for e in odd_events() if _POLICY._quick_facts(e) is None]
    assert 0 < len(declined) < len(odd_events())


class _Lookup:
    """A consent lookup of another kind than ConsentStore: whatever it is told to answer."""

    def __init__(self, state: ConsentState) -> None:
        self.state = state

    def lookup(self, subject: str, purpose: str, role: str, now_ms: int) -> ConsentState:
        return self.state


def test_remembered_outcomes_never_carry_one_childs_consent_to_another() -> None:
    policy = Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)
    store = ConsentStore()
    for n, scope in enumerate([None, ["identity", "health"], None]):
        store.apply(
            consent_event(
                status="GIVEN",
                subject=f"child-{n}",
                data_classes=scope,
                event_id=f"c0c0c0c0-0000-4000-8000-00000000000{n}",
            )
        )
    # states of other kinds than ConsentStore's: a plain-str status, a set as scope
    record = ConsentRecord("rec-x", "child-0", "SAFEGUARDING", "GIVEN")
    a_set: Any = {"identity"}
    odd = [
        _Lookup(ConsentState("REFUSED", record)),  # type: ignore[arg-type]
        _Lookup(ConsentState(ConsentStatus.GIVEN, dataclasses.replace(record, data_classes=a_set))),
        _Lookup(ConsentState(ConsentStatus.WITHDRAWN, dataclasses.replace(record, record_id=""))),
    ]
    refs = set()
    for _ in range(2):
        for n in (0, 1, 2, 3, 0):
            for reason in (None, "WOULD_PREJUDICE_PROTECTION"):
                event = make_event(subject=f"child-{n}", reason=reason, justification=JUST)
                lookups: list[Any] = [store, *odd, store]
                for lookup in lookups:
                    got = policy.decide_all(event, lookup, NOW)
                    assert got == policy.decide_all_plainly(event, lookup, NOW)
                    refs |= {d.consent_ref for d in got}
    assert {"c0c0c0c0-0000-4000-8000-000000000000", "c0c0c0c0-0000-4000-8000-000000000002"} <= refs


# -- consent lookups from states built when the record is put ---------------------


def test_a_lookup_after_apply_sees_the_new_record_not_the_old_state() -> None:
    store = ConsentStore()
    given_a = consent_event(status="GIVEN", event_id="a")
    store.apply(given_a)
    first = store.lookup("child-0001", "SAFEGUARDING", "police", NOW)
    assert first.status is ConsentStatus.GIVEN and first.record_id == "a"
    store.apply(consent_event(status="WITHDRAWN", event_id="b"))
    state = store.lookup("child-0001", "SAFEGUARDING", "police", NOW)
    assert state.status is ConsentStatus.WITHDRAWN and state.record_id == "b"
    # a partial withdrawal: a new GIVEN record with a narrower role scope
    store.apply(consent_event(status="GIVEN", roles=["mash_team"], event_id="c"))
    assert store.lookup("child-0001", "SAFEGUARDING", "police", NOW).status is ConsentStatus.NONE
    state = store.lookup("child-0001", "SAFEGUARDING", "mash_team", NOW)
    assert state.status is ConsentStatus.GIVEN and state.record_id == "c"
    store.delete("child-0001", "SAFEGUARDING")
    assert store.lookup("child-0001", "SAFEGUARDING", "mash_team", NOW).status is ConsentStatus.NONE
    assert store.get("child-0001", "SAFEGUARDING") is None and len(store) == 0
    # the same record applied again after its delete: a state for it again, equal to the first
    store.apply(given_a)
    again = store.lookup("child-0001", "SAFEGUARDING", "police", NOW)
    assert again == first and again.status is ConsentStatus.GIVEN


def test_expiry_is_decided_at_each_lookup_not_remembered() -> None:
    store = ConsentStore()
    store.apply(consent_event(status="GIVEN", expires_at=NOW + 10, event_id="g"))
    store.apply(consent_event(status="REFUSED", purpose="EARLY_HELP", expires_at=NOW, event_id="r"))
    store.apply(consent_event(status="WITHDRAWN", purpose="HEALTH", expires_at=NOW, event_id="w"))
    statuses = {
        (purpose, now): store.lookup("child-0001", purpose, "mash_team", now).status
        for now in (NOW + 10, NOW - 1, NOW + 9, NOW + 11, NOW)  # later, then earlier again
        for purpose in ("SAFEGUARDING", "EARLY_HELP", "HEALTH")
    }
    assert statuses == {
        ("SAFEGUARDING", NOW - 1): ConsentStatus.GIVEN,
        ("SAFEGUARDING", NOW): ConsentStatus.GIVEN,
        ("SAFEGUARDING", NOW + 9): ConsentStatus.GIVEN,
        ("SAFEGUARDING", NOW + 10): ConsentStatus.EXPIRED,
        ("SAFEGUARDING", NOW + 11): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW - 1): ConsentStatus.REFUSED,
        ("EARLY_HELP", NOW): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW + 9): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW + 10): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW + 11): ConsentStatus.EXPIRED,
        **{
            ("HEALTH", now): ConsentStatus.WITHDRAWN
            for now in (NOW - 1, NOW, NOW + 9, NOW + 10, NOW + 11)
        },
    }


def test_lookups_of_one_record_share_one_state_per_status() -> None:
    # the point of the entries: no state built per call (and the states are frozen)
    store = ConsentStore(
        [ConsentRecord("r", "child-1", "SAFEGUARDING", "GIVEN", expires_at_ms=NOW)]
    )
    before = store.lookup("child-1", "SAFEGUARDING", "police", NOW - 1)
    assert before is store.lookup("child-1", "SAFEGUARDING", "mash_team", NOW - 2)
    after = store.lookup("child-1", "SAFEGUARDING", "police", NOW)
    assert after is store.lookup("child-1", "SAFEGUARDING", "police", NOW + 1)
    assert (before.status, after.status) == (ConsentStatus.GIVEN, ConsentStatus.EXPIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.status = ConsentStatus.REFUSED  # type: ignore[misc]


_SUBJECTS = st.sampled_from(["child-1", "child-2"])
_PURPOSES = st.sampled_from(["SAFEGUARDING", "EARLY_HELP"])
_ROLES = st.sampled_from(["mash_team", "police", "school_dsl"])
_TIMES = st.integers(NOW - 3, NOW + 3)
_PUT = st.builds(
    lambda n, subject, purpose, status, roles, expires: (
        "put",
        ConsentRecord(f"rec-{n}", subject, purpose, status, roles, expires_at_ms=expires),
    ),
    st.integers(0, 9),
    _SUBJECTS,
    _PURPOSES,
    st.sampled_from(["GIVEN", "REFUSED", "WITHDRAWN"]),
    st.frozensets(_ROLES, max_size=2),
    st.none() | _TIMES,
)
_DELETE = st.tuples(st.just("delete"), st.tuples(_SUBJECTS, _PURPOSES))
_LOOKUP = st.tuples(st.just("lookup"), st.tuples(_SUBJECTS, _PURPOSES, _ROLES, _TIMES))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_PUT, _DELETE, _LOOKUP), max_size=40),
    st.permutations(range(NOW - 3, NOW + 4)),
)
def test_lookup_is_lookup_plainly_through_puts_deletes_and_time(
    ops: list[Any], times: list[int]
) -> None:
    store = ConsentStore()
    latest: dict[tuple[str, str], ConsentRecord] = {}
    grid = [
        (s, p, r)
        for s in ("child-1", "child-2")
        for p in ("SAFEGUARDING", "EARLY_HELP")
        for r in ("mash_team", "police", "school_dsl")
    ]
    for op, arg in ops:
        if op == "put":
            store.put(arg)
            latest[(arg.subject, arg.purpose)] = arg
        elif op == "delete":
            store.delete(*arg)
            latest.pop(arg, None)
        else:
            got = store.lookup(*arg)
            assert got == store.lookup_plainly(*arg)
            assert got.record is (latest.get(arg[:2]) if got.record is not None else None)
        assert len(store) == len(latest)
        assert all(store.get(*key) is record for key, record in latest.items())
        # every key and role, at times out of order: nothing remembered across a time
        for now in times:
            for subject, purpose, role in grid:
                got = store.lookup(subject, purpose, role, now)
                assert got == store.lookup_plainly(subject, purpose, role, now)
