"""The policy's ``clocks`` section and subscribers' ``escalate_to``, as the checker sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.loop.calendar import MS_PER_HOUR
from broker.policy import Policy, PolicyError
from tests.policy_helpers import EXAMPLE_POLICY, FIELD_CLASSES

TEXT = Path(EXAMPLE_POLICY).read_text(encoding="utf-8")


def load(text: str, tmp_path: Path) -> Policy:
    f = tmp_path / "policy.yaml"
    f.write_text(text, encoding="utf-8")
    return Policy.load(f, field_classes=FIELD_CLASSES)


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_the_example_policy_spells_out_the_statutory_defaults(tmp_path: Path) -> None:
    policy = load(TEXT, tmp_path)
    assert policy.clocks.due_ms("TRIAGE_RED", 0) == 4 * MS_PER_HOUR
    mash = {s.id: s for s in policy.subscribers}["torbay-mash"]
    assert mash.escalate_to == ("torbay-csc",)


def test_a_policy_without_clocks_gets_the_defaults(tmp_path: Path) -> None:
    start = TEXT.index("\nclocks:\n")
    end = TEXT.index("\n# Rules:")
    policy = load(TEXT[:start] + TEXT[end:], tmp_path)
    assert policy.clocks.due_ms("RETURN_INTERVIEW", 0) == 72 * MS_PER_HOUR


@pytest.mark.parametrize(
    ("old", "new", "needle", "words"),
    [
        ("TRIAGE_RED: {elapsed_hours: 4, stops_on: [TRIAGE]}",
         "TRIAGE_RED: {elapsed_hours: 4, stops_on: [LUNCH]}", "TRIAGE_RED:", "stops_on"),
        ("tier_gap_hours: 4 ", "tier_gap_hours: -4 ", "tier_gap_hours", "positive number"),
        ("    escalate_to: [torbay-csc]\n", "    escalate_to: [torbay-cs]\n",
         "escalate_to: [torbay-cs]", "unknown subscriber 'torbay-cs'"),
        ("    escalate_to: [torbay-csc]\n", "    escalate_to: [torbay-mash]\n",
         "escalate_to: [torbay-mash]\n  - id: devon-mash", "cannot escalate to itself"),
    ],
)
def test_mistakes_are_reported_at_their_line(
    tmp_path: Path, old: str, new: str, needle: str, words: str
) -> None:
    assert old in TEXT
    text = TEXT.replace(old, new, 1)
    with pytest.raises(PolicyError) as info:
        load(text, tmp_path)
    problems = info.value.problems
    assert any(words in p.message for p in problems), problems
    assert any(p.line == line_of(text, needle) for p in problems), problems
