"""`safeshare policy check` and `Policy.load`: every kind of mistake, at its place."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import broker.policy.engine as engine
from broker.cli.policy import policy as policy_cli
from broker.errors import SafeshareError
from broker.policy import Policy, PolicyError
from broker.policy._check import Vocabulary
from tests.policy_helpers import EXAMPLE_POLICY, FIELD_CLASSES

BASE = """\
version: 1
name: test policy
local_authorities:
  E06000027: Torbay
  E10000008: Devon
purposes:
  SAFEGUARDING: protecting children
roles:
  mash_team:
    description: hub
    data_classes: [pseudonym, identity, concern_summary, health]
  school_dsl:
    description: school lead
    data_classes: [pseudonym, concern_summary]
  police_team:
    description: police
    law_enforcement: true
    data_classes: [pseudonym, police]
agencies:
  - id: police
    name: Police
    type: POLICE
    local_authorities: [E06000027]
  - id: hospital
    name: Hospital
    type: HEALTH
    local_authorities: [E06000027]
subscribers:
  - id: mash
    organisation: Council
    roles: [mash_team]
    local_authorities: [E06000027]
    purposes: [SAFEGUARDING]
  - id: school
    organisation: School
    roles: [school_dsl]
    local_authorities: [E06000027]
    purposes: [SAFEGUARDING]
  - id: cops
    organisation: Police
    roles: [police_team]
    local_authorities: [E06000027]
    purposes: [SAFEGUARDING]
consent:
  recorders:
    - id: police-records-consent
      agencies: [police]
      purposes: [SAFEGUARDING]
rules:
  - id: school-no-health
    description: no health to schools
    when:
      source_agency_types: [HEALTH]
      subscriber_roles: [school_dsl]
    effect: withhold
    reason: health stays with health
  - id: missing-to-all
    description: missing episodes
    when:
      categories: [MISSING_EPISODE]
      min_risk: MEDIUM
    effect: share
    purpose: SAFEGUARDING
    without_consent:
      min_risk: HIGH
"""


@pytest.fixture(autouse=True)
def _hand_made_vocabulary(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI asks the codec for field classes; here it gets the hand-made map."""
    monkeypatch.setattr(engine, "_default_vocabulary", lambda: Vocabulary(FIELD_CLASSES))
    yield


def place(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based line:column of the nth occurrence of ``needle``."""
    at = -1
    for _ in range(nth):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    return line, col


def run_check(tmp_path: Path, text: str) -> tuple[int, str, str]:
    f = tmp_path / "policy.yaml"
    f.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(policy_cli, ["check", str(f)])
    return result.exit_code, result.stdout, str(f)


def test_base_policy_is_valid(tmp_path: Path) -> None:
    code, out, f = run_check(tmp_path, BASE)
    assert code == 0, out
    assert "OK" in out and "3 subscribers" in out and "2 rules" in out


def test_example_policy_is_valid(tmp_path: Path) -> None:
    result = CliRunner().invoke(policy_cli, ["check", str(EXAMPLE_POLICY)])
    assert result.exit_code == 0, result.stdout
    p = Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)
    assert result.stdout.count(p.digest) == 1
    assert 7 <= len(p.subscribers) <= 11


# (name, old text, new text, the text whose place is reported, nth occurrence of it
#  in the mutated file, words the message must contain)
CASES = [
    (
        "an unknown signing mode",
        "    type: HEALTH\n",
        "    type: HEALTH\n    signing: outsourced\n",
        "outsourced",
        1,
        ["'outsourced' is not one of agency, gateway"],
    ),
    (
        "signing delegated to the gateway without a registered key",
        "    type: HEALTH\n",
        "    type: HEALTH\n    signing: gateway\n",
        "gateway",
        1,
        ["signing: gateway needs the gateway's key registered under 'keys'"],
    ),
    (
        "consent recorder names an unknown agency",
        "      agencies: [police]\n      purposes: [SAFEGUARDING]",
        "      agencies: [polise]\n      purposes: [SAFEGUARDING]",
        "polise",
        1,
        ["unknown agency 'polise'", "did you mean 'police'"],
    ),
    (
        "consent recorder names an unknown purpose",
        "      agencies: [police]\n      purposes: [SAFEGUARDING]",
        "      agencies: [police]\n      purposes: [EARLY_HELP]",
        "EARLY_HELP",
        1,
        ["unknown purpose 'EARLY_HELP'"],
    ),
    (
        "consent recorder without agencies",
        "      agencies: [police]\n",
        "",
        "- id: police-records-consent",
        1,
        ["name the 'agencies' or 'agency_types'"],
    ),
    (
        "withdraw_others is not a boolean",
        "      purposes: [SAFEGUARDING]\nrules:",
        "      purposes: [SAFEGUARDING]\n      withdraw_others: sometimes\nrules:",
        "sometimes",
        1,
        ["expected true or false"],
    ),
    (
        "typo in a key",
        "      subscriber_roles: [school_dsl]",
        "      subscriber_role: [school_dsl]",
        "subscriber_role:",
        1,
        ["unknown key 'subscriber_role'", "did you mean 'subscriber_roles'"],
    ),
    (
        "unknown top-level key",
        "version: 1\n",
        "version: 1\nsharing_agreement: yes please\n",
        "sharing_agreement",
        1,
        ["unknown key 'sharing_agreement'"],
    ),
    (
        "unknown role on a subscriber",
        "    roles: [school_dsl]",
        "    roles: [school_dls]",
        "school_dls",
        1,
        ["unknown role 'school_dls'", "did you mean 'school_dsl'"],
    ),
    (
        "unknown role in a rule",
        "      subscriber_roles: [school_dsl]",
        "      subscriber_roles: [teacher]",
        "teacher",
        1,
        ["unknown role 'teacher'"],
    ),
    (
        "unknown data class",
        "data_classes: [pseudonym, concern_summary]",
        "data_classes: [pseudonym, concern_sumary]",
        "concern_sumary",
        1,
        ["unknown data class 'concern_sumary'", "did you mean 'concern_summary'"],
    ),
    (
        "unknown agency reference",
        "      categories: [MISSING_EPISODE]",
        "      categories: [MISSING_EPISODE]\n      source_agencies: [polise]",
        "polise",
        1,
        ["unknown agency 'polise'", "did you mean 'police'"],
    ),
    (
        "unknown subscriber reference",
        "      categories: [MISSING_EPISODE]",
        "      categories: [MISSING_EPISODE]\n      subscribers: [mash, skool]",
        "skool",
        1,
        ["unknown subscriber 'skool'"],
    ),
    (
        "duplicate subscriber id",
        "  - id: cops\n",
        "  - id: school\n",
        "id: school",
        2,
        ["duplicate subscriber id 'school'", "first defined at line"],
    ),
    (
        "duplicate rule id",
        "  - id: missing-to-all",
        "  - id: school-no-health",
        "id: school-no-health",
        2,
        ["duplicate rule id 'school-no-health'"],
    ),
    (
        "unknown purpose",
        "    purpose: SAFEGUARDING",
        "    purpose: SAFEGARDING",
        "SAFEGARDING",
        1,
        ["unknown purpose 'SAFEGARDING'", "did you mean 'SAFEGUARDING'"],
    ),
    (
        "unknown local authority",
        "    local_authorities: [E06000027]\n    purposes",
        "    local_authorities: [E0600027]\n    purposes",
        "E0600027",
        1,
        ["unknown local authority 'E0600027'"],
    ),
    (
        "bad risk level",
        "      min_risk: MEDIUM",
        "      min_risk: MEDUIM",
        "MEDUIM",
        1,
        ["unknown risk level 'MEDUIM'", "did you mean 'MEDIUM'"],
    ),
    (
        "unknown payload type",
        "      categories: [MISSING_EPISODE]",
        "      categories: [MISSING_EPISODE]\n      payload_types: [MissingEpisod]",
        "MissingEpisod",
        1,
        ["unknown payload type 'MissingEpisod'", "did you mean 'MissingEpisode'"],
    ),
    (
        "referrer granted to a role",
        "data_classes: [pseudonym, police]",
        "data_classes: [pseudonym, police, referrer]",
        "referrer",
        1,
        ["may not be granted 'referrer'", "explicit_grants"],
    ),
    (
        "withhold rule without a reason",
        "    reason: health stays with health\n",
        "",
        "- id: school-no-health",
        1,
        ["needs a 'reason'"],
    ),
    (
        "duplicate YAML key",
        "    effect: withhold\n",
        "    effect: withhold\n    effect: share\n",
        "effect: share",
        1,
        ["duplicate key 'effect'", "would silently win"],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "needle", "nth", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_check_reports_each_error_at_its_place(
    tmp_path: Path, old: str, new: str, needle: str, nth: int, words: list[str]
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    code, out, f = run_check(tmp_path, text)
    assert code != 0
    line, col = place(text, needle, nth)
    if needle.startswith("- id:"):  # a mapping in a list is reported where it starts
        col += 2
    if needle.startswith("id: "):  # the duplicate id is reported at its value
        col += 4
    expected = f"{f}:{line}:{col}: "
    hits = [ln for ln in out.splitlines() if ln.startswith(expected)]
    assert hits, f"expected a problem at {expected!r}, got:\n{out}"
    assert any(all(w in h for w in words) for h in hits), out
    # the router-facing loader refuses the same file, with the same place
    with pytest.raises(PolicyError) as info:
        Policy.load(f, field_classes=FIELD_CLASSES)
    assert any((p.line, p.column) == (line, col) for p in info.value.problems)
    assert isinstance(info.value, SafeshareError)


def test_a_policy_without_its_consent_section_does_not_load(tmp_path: Path) -> None:
    """Fail closed: who may record consent must be said; an empty list says "nobody"."""
    section = BASE[BASE.index("consent:\n"):BASE.index("rules:\n")]
    code, out, f = run_check(tmp_path, BASE.replace(section, ""))
    assert code != 0 and f"{f}:1:1: top level: missing required key 'consent'" in out
    code, out, f = run_check(tmp_path, BASE.replace(section, "consent:\n  recorders: []\n"))
    assert code == 0 and "no agency may record consent" in out, out
    code, out, f = run_check(tmp_path, BASE)
    assert "consent recorder police-records-consent: police for SAFEGUARDING" in out


def test_unreachable_rule_is_reported_where_it_starts(tmp_path: Path) -> None:
    text = BASE + (
        "  - id: missing-high-to-mash\n"
        "    description: shadowed by missing-to-all\n"
        "    when:\n"
        "      categories: [MISSING_EPISODE]\n"
        "      subscriber_roles: [mash_team]\n"
        "      min_risk: HIGH\n"
        "    effect: share\n"
        "    purpose: SAFEGUARDING\n"
    )
    code, out, f = run_check(tmp_path, text)
    assert code != 0
    line, col = place(text, "- id: missing-high-to-mash")
    first_line, first_col = place(text, "- id: missing-to-all")
    assert re.search(
        rf"^{re.escape(f)}:{line}:{col + 2}: rule 'missing-high-to-mash' is unreachable: rule"
        rf" 'missing-to-all' at line {first_line}:{first_col + 2}",
        out,
        re.M,
    ), out


def test_a_narrower_earlier_rule_does_not_make_a_later_one_unreachable(tmp_path: Path) -> None:
    # the earlier rule is *more* specific (HIGH only, mash only): the later one still matters
    text = BASE.replace(
        "  - id: missing-to-all",
        "  - id: high-to-mash\n"
        "    description: narrower, first\n"
        "    when:\n"
        "      categories: [MISSING_EPISODE]\n"
        "      subscribers: [mash]\n"
        "      min_risk: HIGH\n"
        "    effect: share\n"
        "    purpose: SAFEGUARDING\n"
        "  - id: missing-to-all",
    )
    code, out, _ = run_check(tmp_path, text)
    assert code == 0, out


def test_cross_area_rule_is_not_shadowed_by_an_in_area_rule(tmp_path: Path) -> None:
    text = BASE + (
        "  - id: missing-anywhere\n"
        "    description: reaches out-of-area subscribers too\n"
        "    when:\n"
        "      categories: [MISSING_EPISODE]\n"
        "      min_risk: MEDIUM\n"
        "      cross_area: true\n"
        "    effect: share\n"
        "    purpose: SAFEGUARDING\n"
    )
    code, out, _ = run_check(tmp_path, text)
    assert code == 0, out


def test_yaml_syntax_error_has_a_place(tmp_path: Path) -> None:
    text = BASE.replace("      min_risk: HIGH\n", "      min_risk: [HIGH\n")
    code, out, f = run_check(tmp_path, text)
    assert code != 0
    assert re.search(rf"^{re.escape(f)}:\d+:\d+: YAML syntax error", out, re.M), out


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path) -> None:
    text = BASE.replace("[school_dsl]\n    local", "[school_dls]\n    local").replace(
        "purpose: SAFEGUARDING", "purpose: SAFEGARDING"
    )
    code, out, f = run_check(tmp_path, text)
    assert code != 0
    assert "unknown role 'school_dls'" in out and "unknown purpose 'SAFEGARDING'" in out


def test_missing_file_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(policy_cli, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0
    with pytest.raises(PolicyError):
        Policy.load(tmp_path / "nope.yaml", field_classes=FIELD_CLASSES)


def test_mixing_law_enforcement_and_other_roles_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("    roles: [police_team]", "    roles: [police_team, mash_team]")
    code, out, f = run_check(tmp_path, text)
    line, col = place(text, "[police_team, mash_team]")
    assert code != 0
    assert f"{f}:{line}:{col}: subscriber 'cops' mixes law-enforcement roles" in out


def test_a_codec_field_with_an_unknown_data_class_is_refused() -> None:
    bad = dict(FIELD_CLASSES, **{"summary": "gossip"})
    with pytest.raises(PolicyError, match="unknown to policy"):
        Policy.from_text(BASE, field_classes=bad)


def test_digest_ignores_comments_and_layout_but_not_meaning() -> None:
    p1 = Policy.from_text(BASE, field_classes=FIELD_CLASSES)
    reformatted = "# a comment a DPO wrote\n" + BASE.replace(
        "data_classes: [pseudonym, police]",
        "data_classes:\n      - pseudonym\n      - police  # why\n",
    ).replace("name: test policy", "name: 'test policy'   # quoted now")
    # key order does not matter either
    reordered = reformatted.replace(
        "version: 1\nname: 'test policy'", "name: 'test policy'\nversion: 1"
    )
    p2 = Policy.from_text(reordered, field_classes=FIELD_CLASSES)
    assert p1.digest == p2.digest
    changed = BASE.replace("      min_risk: HIGH\n", "      min_risk: CRITICAL\n")
    p3 = Policy.from_text(changed, field_classes=FIELD_CLASSES)
    assert p3.digest != p1.digest
    assert re.fullmatch(r"[0-9a-f]{64}", p1.digest)


def test_the_policy_digest_is_the_sha256_of_its_rfc8785_form() -> None:
    """The digest every decision cites can be recomputed by any JCS implementation."""
    import hashlib  # noqa: PLC0415

    import rfc8785  # noqa: PLC0415 - an independent RFC 8785 implementation

    from broker.policy._yaml import load_document  # noqa: PLC0415

    doc, problems = load_document(EXAMPLE_POLICY.read_text(encoding="utf-8"))
    assert doc is not None and not problems
    want = hashlib.sha256(rfc8785.dumps(doc.data)).hexdigest()
    assert Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES).digest == want
