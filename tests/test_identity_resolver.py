"""One child across agencies, as the router resolves it: one pseudonym, twins apart,
the same after a restart and mapped after a key rotation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from broker.identity.linkage import LINK, NEW, Index, Model
from broker.identity.pseudonym import PartnershipKeys
from broker.identity.resolver import Resolver
from broker.identity.store import IndexSealer

DOB = date(2011, 3, 14)
POLICE = {"given_name": "Jessica", "family_name": "Example", "date_of_birth": DOB,
          "postcode": "TQ1 4AB", "nhs_number": "9434765919", "local_authority": "E06000027"}
SCHOOL = {"given_name": "Jessica", "family_name": "Example", "date_of_birth": DOB,
          "upn": "A123456789012", "postcode": "TQ1 4AB", "local_authority": "E06000027"}
# The return-home service: names (a nickname), date of birth, no identifier, no postcode.
RETURN_HOME = {"given_name": "Jess", "family_name": "Example", "date_of_birth": DOB,
               "local_authority": "E06000027"}


@pytest.fixture
def keys(tmp_path: Path) -> PartnershipKeys:
    return PartnershipKeys.load(tmp_path / "keys", create=True)


def test_police_school_and_return_home_service_resolve_to_one_pseudonym(
    keys: PartnershipKeys,
) -> None:
    r = Resolver(keys=keys, index=Index(Model.default()))
    police = r.resolve(POLICE)
    assert police.decision == NEW and police.pseudonym == keys.of_nhs_number("9434765919")
    school = r.resolve(SCHOOL)
    rhi = r.resolve(RETURN_HOME)
    assert (school.decision, school.pseudonym) == (LINK, police.pseudonym)
    assert (rhi.decision, rhi.pseudonym) == (LINK, police.pseudonym)
    # The index record carries nothing in clear.
    key, value = rhi.index_record
    assert key == police.pseudonym.encode() and value is not None
    for clear in (b"Jess", b"Example", b"9434765919", b"A123456789012", b"TQ1"):
        assert clear not in value


def test_the_school_first_then_police_still_one_child(keys: PartnershipKeys) -> None:
    r = Resolver(keys=keys, index=Index(Model.default()))
    school = r.resolve(SCHOOL)
    assert school.decision == NEW and school.pseudonym.startswith("v1:")
    police = r.resolve(POLICE)
    assert (police.decision, police.pseudonym) == (LINK, school.pseudonym)
    assert r.resolve({"nhs_number": "9434765919"}).pseudonym == school.pseudonym


def test_twins_get_their_own_pseudonyms(keys: PartnershipKeys) -> None:
    r = Resolver(keys=keys, index=Index(Model.default()))
    olivia = r.resolve({"given_name": "Olivia", "family_name": "Example", "date_of_birth": DOB,
                        "postcode": "TQ1 4AB"})
    amelia = r.resolve({"given_name": "Amelia", "family_name": "Example", "date_of_birth": DOB,
                        "postcode": "TQ1 4AB"})
    assert amelia.pseudonym != olivia.pseudonym
    assert amelia.decision != LINK


def test_a_restart_resolves_the_same_way(keys: PartnershipKeys) -> None:
    first = Resolver(keys=keys, index=Index(Model.default()))
    police = first.resolve(POLICE)
    twin = first.resolve({"given_name": "Amelia", "family_name": "Example",
                          "date_of_birth": DOB, "postcode": "TQ1 4AB"})
    topic = dict(r.index_record for r in (police, twin))
    # What rebuild() does with the topic's latest values (tested on Kafka in
    # test_identity_store.py): open each entry into a fresh index.
    sealer = IndexSealer(keys)
    index = Index(Model.default())
    for key, value in topic.items():
        assert value is not None
        records, anchor = sealer.open_entry(key.decode(), value)
        for f in records:
            index.add(key.decode(), f)
        assert anchor is not None
        index.anchors[key.decode()] = anchor
    second = Resolver(keys=keys, index=index)
    assert second.resolve(RETURN_HOME).pseudonym == police.pseudonym
    assert second.resolve(SCHOOL).pseudonym == police.pseudonym


def test_after_a_key_rotation_children_move_to_new_pseudonyms_and_old_ones_map(
    tmp_path: Path, keys: PartnershipKeys
) -> None:
    r = Resolver(keys=keys, index=Index(Model.default()))
    police = r.resolve(POLICE)
    other = r.resolve({"given_name": "Noah", "family_name": "Pascoe",
                       "date_of_birth": date(2012, 1, 2)})
    rotated = PartnershipKeys.rotate(tmp_path / "keys")
    r2 = Resolver(keys=rotated, index=r.index)
    mapping, records = r2.rekey()
    assert set(mapping) == {police.pseudonym, other.pseudonym}
    assert mapping[police.pseudonym] == rotated.of_nhs_number("9434765919")
    assert all(new.startswith("v2:") for new in mapping.values())
    assert (police.pseudonym.encode(), None) in records  # the old entry is tombstoned
    assert r2.resolve(RETURN_HOME).pseudonym == mapping[police.pseudonym]
    assert r2.resolve({"nhs_number": "9434765919"}).pseudonym == mapping[police.pseudonym]
