"""The fixed words of policy: data classes, risk levels, reason codes, lawful bases.

Codes are stable strings (they go into the audit log and must mean the same
thing years later); each has a sentence a data protection officer can read.
"""

from __future__ import annotations

from enum import StrEnum

from broker.codec import _schema

#: Data-class vocabulary of docs/CONTRACTS.md. The codec owns it (a schema
#: field's ``dataClass`` must be one of these words, and the codec redacts by
#: them); policy names the same words, so it takes them from there rather than
#: keep a second list that could drift.
DATA_CLASSES: frozenset[str] = _schema.DATA_CLASSES

#: The one data class that is never redacted (an event's routing metadata).
ALWAYS_SHARED: str = _schema.METADATA

#: Identities of people other than the child. docs/DESIGN.md ("Policy"): redacted by
#: default; only a rule that names them explicitly may share them, so a role
#: grant can never leak who made a referral or which adults were mentioned.
PROTECTED_CLASSES: frozenset[str] = frozenset({"referrer", "third_party"})

#: Risk levels in ascending order (CONTRACTS.md: LOW < MEDIUM < HIGH < CRITICAL).
RISK_LEVELS: tuple[str, ...] = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
RISK_RANK: dict[str, int] = {name: i for i, name in enumerate(RISK_LEVELS)}

#: The event schema's enums a policy may name (schemas/AgencyType.avsc,
#: ConcernCategory.avsc, ConsentPurpose.avsc); a test keeps them in step.
AGENCY_TYPES: frozenset[str] = frozenset(
    {"POLICE", "HEALTH", "SCHOOL", "CHILDRENS_SOCIAL_CARE", "VOLUNTARY", "LOCAL_AUTHORITY", "OTHER"}
)
CATEGORIES: frozenset[str] = frozenset(
    {
        "MISSING_EPISODE",
        "RETURN_HOME_INTERVIEW",
        "HEALTH_CONCERN",
        "EDUCATION_CONCERN",
        "DOMESTIC_ABUSE",
        "EXPLOITATION",
        "CONSENT",
        "PATTERN",
        "OTHER",
    }
)
#: Consent is sought and recorded per purpose (ConsentRecord.purpose).
PURPOSES: frozenset[str] = frozenset(
    {"SAFEGUARDING", "EARLY_HELP", "RETURN_HOME_SUPPORT", "HEALTH_CARE", "EDUCATION_SUPPORT"}
)


class Outcome(StrEnum):
    SHARE = "SHARE"
    WITHHOLD = "WITHHOLD"


class NoConsentReason(StrEnum):
    """The three reasons DPA 2018 Sch 1 para 18(3) accepts for processing without consent.

    (a) consent cannot be given by the data subject; (b) the controller cannot
    reasonably be expected to obtain it; (c) obtaining it would prejudice the
    provision of the protection. docs/DESIGN.md: "no consent needed when asking would
    put the child at risk or when it cannot be given or reasonably obtained".
    """

    CANNOT_BE_GIVEN = "CANNOT_BE_GIVEN"
    CANNOT_REASONABLY_BE_OBTAINED = "CANNOT_REASONABLY_BE_OBTAINED"
    WOULD_PREJUDICE_PROTECTION = "WOULD_PREJUDICE_PROTECTION"

    @property
    def text(self) -> str:
        return _NO_CONSENT_TEXT[self]


_NO_CONSENT_TEXT: dict[NoConsentReason, str] = {
    NoConsentReason.CANNOT_BE_GIVEN: "consent cannot be given (DPA 2018 Sch 1 para 18(3)(a))",
    NoConsentReason.CANNOT_REASONABLY_BE_OBTAINED: (
        "consent cannot reasonably be obtained (DPA 2018 Sch 1 para 18(3)(b))"
    ),
    NoConsentReason.WOULD_PREJUDICE_PROTECTION: (
        "asking for consent would prejudice the child's protection (DPA 2018 Sch 1 para 18(3)(c))"
    ),
}


class LawfulBasis(StrEnum):
    """Lawful basis of a share; which applies depends on the recipient.

    See docs/DESIGN.md, "Policy".
    """

    CONSENT = "CONSENT_UKGDPR_6_1_A_9_2_A"
    SAFEGUARDING = "SAFEGUARDING_UKGDPR_9_2_G_DPA2018_SCH1_PARA18"
    LAW_ENFORCEMENT_SAFEGUARDING = "LAW_ENFORCEMENT_DPA2018_SCH8_PARA4"

    @property
    def text(self) -> str:
        return _BASIS_TEXT[self]


_BASIS_TEXT: dict[LawfulBasis, str] = {
    LawfulBasis.CONSENT: (
        "consent: UK GDPR Art 6(1)(a) and, for special category data, Art 9(2)(a)"
        " (for a police recipient, consent under DPA 2018 s35(2)(a))"
    ),
    LawfulBasis.SAFEGUARDING: (
        "safeguarding without consent: UK GDPR Art 9(2)(g) (substantial public interest)"
        " with DPA 2018 Sch 1 para 18 (safeguarding of children and of individuals at risk)"
    ),
    LawfulBasis.LAW_ENFORCEMENT_SAFEGUARDING: (
        "law enforcement processing by a competent authority: DPA 2018 Part 3, s35(5)"
        " with Sch 8 para 4 (safeguarding of children and of individuals at risk)"
    ),
}


class ReasonCode(StrEnum):
    """Why a decision came out as it did. Every withheld share carries one."""

    # shares
    CONSENT_GIVEN = "CONSENT_GIVEN"
    SHARED_WITHOUT_CONSENT = "SHARED_WITHOUT_CONSENT"
    # withheld before any rule is consulted
    UNKNOWN_SUBSCRIBER = "UNKNOWN_SUBSCRIBER"
    UNKNOWN_AGENCY = "UNKNOWN_AGENCY"
    MALFORMED_EVENT = "MALFORMED_EVENT"
    # withheld by default deny
    NO_MATCHING_RULE = "NO_MATCHING_RULE"
    OUT_OF_AREA = "OUT_OF_AREA"
    # withheld by a rule
    RULE_WITHHOLD = "RULE_WITHHOLD"
    NO_CONSENT = "NO_CONSENT"
    CONSENT_REFUSED = "CONSENT_REFUSED"
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    OVERRIDE_RISK_TOO_LOW = "OVERRIDE_RISK_TOO_LOW"
    OVERRIDE_NO_REASON = "OVERRIDE_NO_REASON"
    OVERRIDE_NO_JUSTIFICATION = "OVERRIDE_NO_JUSTIFICATION"
    OVERRIDE_REASON_CONTRADICTED = "OVERRIDE_REASON_CONTRADICTED"


class ObligationCode(StrEnum):
    """Duties a share creates, each with a deadline measured from the decision time."""

    REVIEW_WITHIN_72H = "REVIEW_WITHIN_72H"

    @property
    def due_after_ms(self) -> int:
        return _OBLIGATION_DUE_MS[self]

    @property
    def text(self) -> str:
        return _OBLIGATION_TEXT[self]


_HOUR_MS = 3_600_000
_OBLIGATION_DUE_MS: dict[ObligationCode, int] = {ObligationCode.REVIEW_WITHIN_72H: 72 * _HOUR_MS}
_OBLIGATION_TEXT: dict[ObligationCode, str] = {
    ObligationCode.REVIEW_WITHIN_72H: (
        "an emergency (break-glass) share must be reviewed by a manager or the data"
        " protection officer within 72 hours"
    ),
}
