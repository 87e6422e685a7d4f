"""Record linkage without the identifier: the same child is found, twins are kept apart."""

from __future__ import annotations

from datetime import date

from broker.identity.linkage import (
    LINK,
    NEW,
    REVIEW,
    Features,
    Index,
    Model,
    dob_level,
    name_level,
    postcode_level,
)
from broker.identity.nicknames import same_name

DOB = date(2011, 3, 14)


def _index() -> Index:
    return Index(Model.default())


def test_comparison_levels_are_splinks() -> None:
    assert name_level("jessica", "jessica") == 0
    assert name_level("jessica", "jesica") == 1
    assert name_level("olivia", "amelia") == 4
    assert name_level(None, "x") is None
    assert dob_level("2011-03-14", "2011-03-14") == 0
    assert dob_level("2011-03-14", "2011-03-15") == 1
    assert dob_level("2011-03-14", "2011-04-20") == 3
    assert postcode_level("TQ14AB", "TQ14AB") == 0
    assert postcode_level("TQ14AB", "TQ14XY") == 1
    assert postcode_level("TQ14AB", "TQ12XY") == 2
    assert postcode_level("TQ14AB", "TQ128XY") == 3
    assert postcode_level("TQ14AB", "EX14AB") == 4
    assert same_name("Jess", "Jessica") and same_name("Jamie", "James")


def test_police_school_and_return_home_records_are_one_child() -> None:
    index = _index()
    police = Features.of(given="Jessica", family="Example", dob=DOB, postcode="TQ1 4AB",
                         nhs="9434765919")
    assert index.match(police).decision == NEW
    index.add("v1:child", police)
    school = Features.of(given="Jessica", family="Example", dob=DOB, postcode="TQ1 4AB",
                         upn="A123456789012")
    m = index.match(school)
    assert (m.decision, m.pseudonym) == (LINK, "v1:child")
    index.add("v1:child", school)
    # The return-home service knows her as Jess, and has no postcode: never a new
    # child; linked, or offered to the MASH with her as the candidate.
    rhi = Features.of(given="Jess", family="Example", dob=DOB)
    m = index.match(rhi)
    assert m.decision in (LINK, REVIEW) and m.pseudonym == "v1:child"
    # Later events with an identifier go straight to her.
    assert index.match(Features.of(upn="A123456789012")).pseudonym == "v1:child"
    assert index.match(Features.of(nhs="9434765919")).pseudonym == "v1:child"


def test_twins_are_never_linked_automatically() -> None:
    index = _index()
    index.add("v1:twin-a", Features.of(given="Olivia", family="Example", dob=DOB,
                                        postcode="TQ1 4AB"))
    m = index.match(Features.of(given="Amelia", family="Example", dob=DOB, postcode="TQ1 4AB"))
    assert m.decision in (NEW, REVIEW)
    # Even with the other twin's own NHS number known, a different one is another child.
    index.add("v1:twin-b", Features.of(given="Amelia", family="Example", dob=DOB,
                                        postcode="TQ1 4AB", nhs="9434765919"))
    m = index.match(Features.of(given="Amelia", family="Example", dob=DOB, postcode="TQ1 4AB",
                                nhs="9434765870"))
    assert m.decision != LINK or m.pseudonym != "v1:twin-b"


def test_a_typo_and_swapped_day_and_month_still_find_the_child() -> None:
    index = _index()
    index.add("v1:c", Features.of(given="Charlotte", family="Penhaligon", dob=date(2012, 5, 9),
                                  postcode="TQ2 6AB"))
    m = index.match(Features.of(given="Charlotte", family="Penhaligan", dob=date(2012, 9, 5),
                                postcode="TQ2 6AB"))
    assert m.decision in (LINK, REVIEW) and m.pseudonym == "v1:c"


def test_a_common_name_alone_is_not_enough() -> None:
    index = _index()
    index.add("v1:c", Features.of(given="Olivia", family="Smith", dob=date(2012, 5, 9)))
    m = index.match(Features.of(given="Olivia", family="Smith", dob=date(2014, 1, 30)))
    assert m.decision == NEW
