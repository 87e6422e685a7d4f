"""The partnership's clock rules: the policy's ``clocks`` section and its defaults.

Defaults follow the timescales the partnership works to (Working Together to
Safeguard Children 2023; Operation Encompass; the statutory guidance on
children who run away or go missing):

| kind               | starts at a share to          | due                         | met by      |
|--------------------|-------------------------------|-----------------------------|-------------|
| TRIAGE_RED         | a MASH, rated Red             | 4 hours, day or night       | TRIAGE      |
| TRIAGE_AMBER       | a MASH, rated Amber           | 24 working hours            | TRIAGE      |
| TRIAGE_GREEN       | a MASH, rated Green           | 72 hours                    | TRIAGE      |
| REFERRAL_DECISION  | children's social care        | 1 working day               | DECISION    |
| ENCOMPASS          | a school (domestic abuse)     | before the next school day  | RECEIPT     |
| RETURN_INTERVIEW   | the return-home service       | 72 hours after the return   | RHI_OFFERED |
| BREAK_GLASS_REVIEW | a team, under break-glass     | 72 hours                    | REVIEWED    |

The initial RAG rating comes from the event's risk level (``rag_from_risk``);
a practitioner's TRIAGE acknowledgement may re-rate it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

from broker.loop.calendar import MS_PER_HOUR, CalendarError, WorkingCalendar, parse_weekdays
from broker.loop.clocks import ClockRule, ClockState, Measure

ACK_KINDS = ("RECEIPT", "TRIAGE", "DECISION", "OUTCOME", "RHI_OFFERED", "REVIEWED")
RAGS = ("RED", "AMBER", "GREEN")
RISKS = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
BREAK_GLASS_OBLIGATION = "REVIEW_WITHIN_72H"
DEFAULT_RAG: Mapping[str, str] = {"CRITICAL": "RED", "HIGH": "AMBER", "MEDIUM": "AMBER",
                                  "LOW": "GREEN"}


class ClockPolicyError(ValueError):
    """The policy's ``clocks`` section is wrong; the message names the key."""


@dataclass(frozen=True)
class StartRule:
    """Which shares start a clock of ``kind``: the recipient's roles and the categories."""

    kind: str
    roles: frozenset[str]
    categories: frozenset[str] = frozenset()  # empty: any category


@dataclass(frozen=True)
class ClockPolicy:
    rules: Mapping[str, ClockRule]
    starts: Sequence[StartRule]
    working: WorkingCalendar = field(default_factory=WorkingCalendar)
    school: WorkingCalendar = field(
        default_factory=lambda: WorkingCalendar(day_start=time(8, 30), day_end=time(15, 30))
    )
    rag_from_risk: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_RAG))

    def due_ms(self, kind: str, start_ms: int) -> int:
        return self.rules[kind].due_ms(start_ms, self.working, self.school)


@dataclass(frozen=True)
class Share:
    """What the router knows when it shares an event with one subscriber."""

    event_id: str
    subject: str  # the audit HMAC of the pseudonym
    subscriber: str
    roles: frozenset[str]
    shared_at_ms: int
    category: str
    risk_level: str
    obligations: frozenset[str] = frozenset()
    returned_at_ms: int | None = None  # a missing episode's end, if known
    escalate_to: tuple[str, ...] = ()


def clock_id(kind: str, event_id: str, owner: str) -> str:
    return f"{kind}:{event_id}:{owner}"


def clocks_for_share(policy: ClockPolicy, share: Share) -> list[ClockState]:
    """The clocks one share starts (none for most shares)."""
    return [
        _state(policy, kind, share,
               share.returned_at_ms if from_return and share.returned_at_ms is not None
               else share.shared_at_ms)
        for kind, from_return in kinds_for_share(
            policy, share.roles, share.category, share.risk_level,
            break_glass=BREAK_GLASS_OBLIGATION in share.obligations,
            returned=share.returned_at_ms is not None,
        )
    ]  # fmt: skip


def kinds_for_share(
    policy: ClockPolicy,
    roles: frozenset[str],
    category: str,
    risk_level: str,
    *,
    break_glass: bool,
    returned: bool,
) -> list[tuple[str, bool]]:
    """The kinds of clock a share starts, each with whether it runs from the child's
    return (not the share). Depends only on these arguments and the policy, so the
    router keeps the answer per combination (broker.loop.starter)."""
    out: list[tuple[str, bool]] = []
    for start in policy.starts:
        if not start.roles & roles:
            continue
        if start.categories and category not in start.categories:
            continue
        kind = start.kind
        if kind == "TRIAGE":
            kind = "TRIAGE_" + policy.rag_from_risk.get(risk_level, "RED")
        elif kind == "RETURN_INTERVIEW":
            if not returned:
                continue  # still missing: the clock starts at the return
            out.append((kind, True))
            continue
        elif kind == "BREAK_GLASS_REVIEW" and not break_glass:
            continue  # only a share under a break-glass rule is reviewed
        out.append((kind, False))
    return out


def _state(policy: ClockPolicy, kind: str, share: Share, begin: int) -> ClockState:
    return ClockState(
        clock_id=clock_id(kind, share.event_id, share.subscriber),
        kind=kind,
        event_id=share.event_id,
        subject=share.subject,
        owner=share.subscriber,
        started_ms=begin,
        due_ms=policy.due_ms(kind, begin),
        escalate_to=share.escalate_to,
    )


# -- defaults and parsing ----------------------------------------------------------
DEFAULT_SECTION: Mapping[str, Any] = {
    "working_hours": {"timezone": "Europe/London", "start": "09:00", "end": "17:00",
                      "days": ["mon", "tue", "wed", "thu", "fri"], "bank_holidays": "GB-ENG"},
    "school_day": {"start": "08:30", "end": "15:30", "closures": []},
    # tier_gap (a duration with its unit, e.g. "30m") may replace tier_gap_hours.
    "tier_gap_hours": 4,
    "rules": {
        "TRIAGE_RED": {"elapsed_hours": 4, "stops_on": ["TRIAGE"]},
        "TRIAGE_AMBER": {"working_hours": 24, "stops_on": ["TRIAGE"]},
        "TRIAGE_GREEN": {"elapsed_hours": 72, "stops_on": ["TRIAGE"]},
        "REFERRAL_DECISION": {"working_days": 1, "stops_on": ["DECISION"]},
        "ENCOMPASS": {"before_next_school_day": True, "stops_on": ["RECEIPT"]},
        "RETURN_INTERVIEW": {"elapsed_hours": 72, "stops_on": ["RHI_OFFERED"]},
        "BREAK_GLASS_REVIEW": {"elapsed_hours": 72, "stops_on": ["REVIEWED"]},
    },
    "starts": [
        {"kind": "TRIAGE", "roles": ["mash_team"]},
        {"kind": "REFERRAL_DECISION", "roles": ["childrens_social_care"]},
        {"kind": "ENCOMPASS", "roles": ["school_dsl"], "categories": ["DOMESTIC_ABUSE"]},
        {"kind": "RETURN_INTERVIEW", "roles": ["return_interview_service"],
         "categories": ["MISSING_EPISODE"]},
        # Teams of people: a detector or other service receiving a break-glass
        # share has nobody to review it.
        {"kind": "BREAK_GLASS_REVIEW", "roles": ["mash_team", "police_exploitation_team",
                                                 "childrens_social_care", "school_dsl",
                                                 "health_safeguarding",
                                                 "return_interview_service"]},
    ],
}


def parse_clock_policy(section: Mapping[str, Any] | None) -> ClockPolicy:
    """Build the clock policy from a ``clocks`` section (``None``: the defaults).

    Keys given override the defaults one by one, so a partnership can change
    one timescale without restating the rest.
    """
    raw: dict[str, Any] = dict(DEFAULT_SECTION)
    if section is not None:
        if not isinstance(section, Mapping):
            raise ClockPolicyError("clocks: must be a mapping")
        unknown = set(section) - set(DEFAULT_SECTION) - {"rag_from_risk", "tier_gap"}
        if unknown:
            raise ClockPolicyError(f"clocks: unknown key {sorted(unknown)[0]!r}")
        raw.update(section)
        raw["rules"] = {**DEFAULT_SECTION["rules"], **(section.get("rules") or {})}
    try:
        working = _calendar(raw["working_hours"], "clocks.working_hours")
        school_raw = raw["school_day"]
        school = WorkingCalendar(
            timezone=working.timezone,
            day_start=_time(school_raw.get("start", "08:30"), "clocks.school_day.start"),
            day_end=_time(school_raw.get("end", "15:30"), "clocks.school_day.end"),
            workdays=working.workdays,
            holiday_region=working.holiday_region,
            extra_closures=frozenset(
                _date(d, "clocks.school_day.closures") for d in school_raw.get("closures") or ()
            ),
        )
    except CalendarError as exc:
        raise ClockPolicyError(f"clocks: {exc}") from exc
    if "tier_gap" in raw:
        gap = _duration(raw["tier_gap"], "clocks.tier_gap")
    else:
        gap = _hours(raw["tier_gap_hours"], "clocks.tier_gap_hours")
    rules = {
        kind: _rule(kind, spec, gap, working, f"clocks.rules.{kind}")
        for kind, spec in raw["rules"].items()
    }
    starts = [_start(s, i, rules) for i, s in enumerate(raw["starts"])]
    rag = {**DEFAULT_RAG, **(raw.get("rag_from_risk") or {})}
    for risk, colour in rag.items():
        if risk not in RISKS or colour not in RAGS:
            raise ClockPolicyError(
                f"clocks.rag_from_risk: {risk}: {colour} is not a risk level mapped to {RAGS}"
            )
    return ClockPolicy(rules=rules, starts=starts, working=working, school=school,
                       rag_from_risk=rag)


def _rule(kind: str, spec: Any, gap: int, working: WorkingCalendar, where: str) -> ClockRule:
    if not isinstance(spec, Mapping):
        raise ClockPolicyError(f"{where}: must be a mapping")
    stops = spec.get("stops_on") or ()
    bad = [s for s in stops if s not in ACK_KINDS]
    if not stops or bad:
        raise ClockPolicyError(f"{where}.stops_on: give one or more of {', '.join(ACK_KINDS)}")
    measures = [k for k in ("elapsed_hours", "elapsed", "working_hours", "working_days",
                            "before_next_school_day") if k in spec]
    if len(measures) != 1:
        raise ClockPolicyError(
            f"{where}: give exactly one of elapsed_hours, elapsed, working_hours, working_days,"
            " before_next_school_day"
        )
    m = measures[0]
    common = {"kind": kind, "stops_on": frozenset(stops), "tier_gap_ms": gap,
              "description": str(spec.get("description", ""))}
    if m == "elapsed_hours":
        return ClockRule(measure=Measure.ELAPSED, duration_ms=_hours(spec[m], f"{where}.{m}"),
                         **common)  # type: ignore[arg-type]
    if m == "elapsed":
        return ClockRule(measure=Measure.ELAPSED, duration_ms=_duration(spec[m], f"{where}.{m}"),
                         **common)  # type: ignore[arg-type]
    if m == "working_hours":
        return ClockRule(measure=Measure.WORKING, duration_ms=_hours(spec[m], f"{where}.{m}"),
                         **common)  # type: ignore[arg-type]
    if m == "working_days":
        day_ms = _ms_between(working.day_start, working.day_end)
        days = _number(spec[m], f"{where}.{m}")
        return ClockRule(measure=Measure.WORKING, duration_ms=int(days * day_ms),
                         **common)  # type: ignore[arg-type]
    if spec[m] is not True:
        raise ClockPolicyError(f"{where}.{m}: must be true")
    return ClockRule(measure=Measure.NEXT_DAY_START, **common)  # type: ignore[arg-type]


def _start(spec: Any, i: int, rules: Mapping[str, ClockRule]) -> StartRule:
    where = f"clocks.starts[{i}]"
    if not isinstance(spec, Mapping) or "kind" not in spec or not spec.get("roles"):
        raise ClockPolicyError(f"{where}: give a kind and one or more roles")
    kind = str(spec["kind"])
    known = kind in rules or (kind == "TRIAGE" and all(f"TRIAGE_{r}" in rules for r in RAGS))
    if not known:
        raise ClockPolicyError(f"{where}.kind: no rule for {kind!r}")
    return StartRule(kind=kind, roles=frozenset(map(str, spec["roles"])),
                     categories=frozenset(map(str, spec.get("categories") or ())))


def _calendar(spec: Any, where: str) -> WorkingCalendar:
    if not isinstance(spec, Mapping):
        raise ClockPolicyError(f"{where}: must be a mapping")
    region: tuple[str, str | None] | None = None
    bh = spec.get("bank_holidays", "GB-ENG")
    if bh:
        country, _, subdiv = str(bh).partition("-")
        region = (country, subdiv or None)
    try:
        return WorkingCalendar(
            timezone=str(spec.get("timezone", "Europe/London")),
            day_start=_time(spec.get("start", "09:00"), f"{where}.start"),
            day_end=_time(spec.get("end", "17:00"), f"{where}.end"),
            workdays=parse_weekdays(spec.get("days") or ["mon", "tue", "wed", "thu", "fri"]),
            holiday_region=region,
        )
    except (KeyError, ValueError) as exc:  # ZoneInfo's unknown zone is a KeyError
        raise ClockPolicyError(f"{where}: {exc}") from exc


def _time(value: Any, where: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ClockPolicyError(f"{where}: {value!r} is not a time like 09:00") from None


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ClockPolicyError(f"{where}: {value!r} is not a date like 2026-12-24") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ClockPolicyError(f"{where}: {value!r} is not a positive number")
    return float(value)


def _hours(value: Any, where: str) -> int:
    return int(_number(value, where) * MS_PER_HOUR)


_UNITS = {"s": 1_000, "m": 60_000, "h": MS_PER_HOUR, "d": 24 * MS_PER_HOUR}


def _duration(value: Any, where: str) -> int:
    """A duration written with its unit: ``30s``, ``90m``, ``4h``, ``3d``.

    For timescales shorter than an hour (and for tests), since the policy file
    admits no fractions: its canonical form, and so its digest, must not
    depend on how a float is printed.
    """
    text = str(value).strip()
    if len(text) >= 2 and text[-1] in _UNITS and text[:-1].isdigit() and int(text[:-1]) > 0:
        return int(text[:-1]) * _UNITS[text[-1]]
    raise ClockPolicyError(f"{where}: {value!r} is not a duration like 30s, 90m, 4h or 3d")


def _ms_between(a: time, b: time) -> int:
    return ((b.hour - a.hour) * 3600 + (b.minute - a.minute) * 60 + (b.second - a.second)) * 1000
