"""Normalisation, fuzzy matching and each detector, without Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.patterns.detectors import DAY_MS, Detectors, Kind, Observation, Threshold, alert_id
from broker.patterns.normalise import PlaceKey, person_name, place_key, same_place, things
from broker.patterns.observe import observations
from broker.policy import Policy
from broker.policy.exceptions import PolicyError

T0 = 1_780_000_000_000
EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"


def key(**place: str) -> PlaceKey:
    k = place_key(place)
    assert k is not None
    return k


def test_structured_places_are_exact_keys() -> None:
    assert key(place="Flat 2, 14 Example Road, TQ4 5AB").key == "pc:TQ45AB:2,14"
    assert key(place="flat 2 14 example rd tq45ab").key == "pc:TQ45AB:2,14"
    assert key(place="UPRN 100040512345").key == "uprn:100040512345"
    assert key(place="50.43531, -3.56612").key == "geo:50.435,-3.566"


def test_a_town_or_a_bare_postcode_is_not_a_place() -> None:
    assert place_key({"place": "Paignton", "area": "Paignton"}) is None
    assert place_key({"area": "Paignton", "postcode_district": "TQ4"}) is None
    assert place_key({"place": "TQ4 5AB"}) is None
    assert place_key(None) is None


def test_free_text_places_match_through_typos_and_abbreviations() -> None:
    a = key(place="Flat 2, 14 Example Road", postcode_district="TQ4")
    assert same_place(a, key(place="flat 2 14 Exmaple Rd", postcode_district="TQ4"))
    assert same_place(a, key(place="the flat at 14 Example Road, flat 2", postcode_district="TQ4"))


def test_free_text_places_that_differ_do_not_match() -> None:
    a = key(place="14 Example Road", postcode_district="TQ4")
    assert not same_place(a, key(place="41 Example Road", postcode_district="TQ4"))
    assert not same_place(a, key(place="14 Example Road", postcode_district="TQ1"))
    assert not same_place(a, key(place="14 Harbour Street", postcode_district="TQ4"))
    assert not same_place(a, key(place="UPRN 100040512345"))


def test_vehicles_and_phones_are_found_in_text() -> None:
    found = things(["picked up in a silver car AB12 CDE; texts him on 07700 900123",
                    "his number +44 7700 900123", None])
    assert found == {"vrm:AB12CDE", "tel:07700900123"}


@pytest.mark.parametrize(("description", "name"), [
    ("Dean Smith (about 25), drives a silver car", "dean smith"),
    ("Dean (about 25)", None),
    ("Mr Dean Smith, older boyfriend", "dean smith"),
    ("an older man in a red car", None),
    ("Mum", None),
    ("her older boyfriend", None),
    (None, None),
])
def test_person_names(description: str | None, name: str | None) -> None:
    assert person_name(description) == name


def _obs(kind: str, key: str, child: str, n: int, day: float) -> Observation:
    return Observation(kind, key, child, f"e-{child}-{n}", T0 + int(day * DAY_MS))


def test_repeat_missing_fires_at_the_third_episode_in_30_days_and_updates() -> None:
    d = Detectors()
    assert d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 1, 0)])[1] == []
    assert d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 2, 10)])[1] == []
    [alert] = d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 3, 29)])[1]
    assert (alert.version, alert.alert_id) == (1, alert_id(Kind.REPEAT_MISSING, "c1"))
    assert len(alert.event_ids) == 3
    # replayed: nothing new, never repeated
    assert d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 3, 29)])[1] == []
    [update] = d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 4, 30)])[1]
    assert (update.alert_id, update.version, len(update.event_ids)) == (alert.alert_id, 2, 4)


def test_repeat_missing_outside_the_window_does_not_fire() -> None:
    d = Detectors()
    for n, day in enumerate((0, 20, 40)):
        assert d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", n, day)])[1] == []


def test_shared_place_needs_three_different_children() -> None:
    d = Detectors()
    place = "pc:TQ45AB:2,14"
    for n in range(3):  # one child three times is not a shared place
        assert d.observe([_obs(Kind.SHARED_PLACE, place, "c1", n, n)])[1] == []
    assert d.observe([_obs(Kind.SHARED_PLACE, place, "c2", 0, 5)])[1] == []
    [alert] = d.observe([_obs(Kind.SHARED_PLACE, place, "c3", 0, 20)])[1]
    assert set(alert.children) == {"c1", "c2", "c3"}


def test_shared_place_joins_free_text_variants_of_one_place() -> None:
    d = Detectors()
    texts = ["Flat 2, 14 Example Road", "flat 2 14 Exmaple Rd", "14 example road flat 2"]
    fired = []
    for i, text in enumerate(texts):
        k = key(place=text, postcode_district="TQ4")
        o = Observation(Kind.SHARED_PLACE, k.key, f"c{i}", f"e{i}", T0 + i * DAY_MS, k.block)
        fired += d.observe([o])[1]
    assert len(fired) == 1 and len(fired[0].children) == 3


def test_shared_person_two_children_in_90_days() -> None:
    d = Detectors()
    assert d.observe([_obs(Kind.SHARED_PERSON, "vrm:AB12CDE", "c1", 0, 0)])[1] == []
    assert d.observe([_obs(Kind.SHARED_PERSON, "vrm:AB12CDE", "c2", 0, 91)])[1] == []
    [alert] = d.observe([_obs(Kind.SHARED_PERSON, "vrm:AB12CDE", "c3", 0, 100)])[1]
    assert set(alert.children) == {"c2", "c3"}


def test_names_are_matched_fuzzily() -> None:
    d = Detectors()
    assert d.observe([_obs(Kind.SHARED_PERSON, "name:dean smith", "c1", 0, 0)])[1] == []
    [alert] = d.observe([_obs(Kind.SHARED_PERSON, "name:dean smyth", "c2", 0, 1)])[1]
    assert alert.key == "name:dean smith"


def test_thresholds_come_from_the_caller() -> None:
    d = Detectors(thresholds={**Detectors().thresholds, Kind.REPEAT_MISSING: Threshold(2, 7)})
    d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 0, 0)])
    assert len(d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 1, 6)])[1]) == 1


def test_expire_forgets_what_left_every_window() -> None:
    d = Detectors()
    d.observe([_obs(Kind.REPEAT_MISSING, "c1", "c1", 0, 0),
               _obs(Kind.SHARED_PERSON, "tel:07700900123", "c1", 0, 0)])
    gone = d.expire(T0 + 31 * DAY_MS)
    assert [o.kind for o in gone] == [Kind.REPEAT_MISSING] and d.size() == 1


def test_observations_of_a_routed_event() -> None:
    event = {
        "event_id": "e1", "occurred_at": T0, "summary": "collected by AB12 CDE",
        "subject": {"pseudonym": "psn-1", "local_authority": "E06000027"},
        "payload": ("safeshare.MissingEpisode", {
            "episode_type": "MISSING", "found": {"place": "Flat 2, 14 Example Road, TQ4 5AB"},
            "last_seen": {"place": "Paignton", "area": "Paignton"}}),
    }
    got = {(o.kind, o.key) for o in observations(event)}
    assert got == {(Kind.REPEAT_MISSING, "psn-1"), (Kind.SHARED_PLACE, "pc:TQ45AB:2,14"),
                   (Kind.SHARED_PERSON, "vrm:AB12CDE"), (Kind.RETURNED, "psn-1")}
    assert list(observations({**event, "subject": {"pseudonym": None}})) == []


def test_policy_patterns_section_sets_thresholds_and_names_bad_values(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert Policy.load(EXAMPLE).pattern_thresholds[Kind.SHARED_PLACE] == Threshold(3, 28)
    changed = tmp_path / "p.yaml"
    changed.write_text(text.replace("shared_place: {children: 3, days: 28}",
                                    "shared_place: {children: 4, days: 14}"), encoding="utf-8")
    assert Policy.load(changed).pattern_thresholds[Kind.SHARED_PLACE] == Threshold(4, 14)
    changed.write_text(text.replace("shared_person: {children: 2, days: 90}",
                                    "shared_person: {children: 1, days: 90}"), encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        Policy.load(changed)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "shared_person:" in t)
    assert f"{line}:" in str(err.value)
    assert "patterns.shared_person.children: expected a whole number from 2 to 1000" \
        in str(err.value)


def test_kinds_of_place_are_not_one_place() -> None:
    for text in ("bus station", "the town centre", "McDonald's", "home", "Paignton seafront"):
        assert place_key({"place": text, "area": "Paignton", "postcode_district": "TQ4"}) is None
    assert place_key({"place": "flat above a takeaway", "area": "Paignton"}) is not None
