"""Consent and need-to-know policy: lawful, minimal, explainable decisions.

Pure Python, no Kafka. The router loads one :class:`Policy` at start (a policy
that fails to load raises :class:`PolicyError`: the router must not start),
feeds a :class:`ConsentStore` from the consent topic, and for every event asks
``policy.decide_all(event, consents, clock.now_ms())``. Each :class:`Decision`
is a value: SHARE with the data classes to keep, or WITHHOLD with a reason.
:func:`explain` puts a decision into words a data protection officer can follow.
"""

from broker.policy.consent import (
    ConsentLookup,
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    ConsentStore,
    consent_key,
)
from broker.policy.decision import DEFAULT_DENY, Decision, Obligation
from broker.policy.engine import Policy, canonical_form, policy_digest
from broker.policy.exceptions import PolicyError, Problem
from broker.policy.explain import explain
from broker.policy.model import Agency, AgencyKey, Role, Rule, Subscriber
from broker.policy.vocabulary import (
    DATA_CLASSES,
    LawfulBasis,
    NoConsentReason,
    ObligationCode,
    Outcome,
    ReasonCode,
)

__all__ = [
    "DATA_CLASSES",
    "DEFAULT_DENY",
    "Agency",
    "AgencyKey",
    "ConsentLookup",
    "ConsentRecord",
    "ConsentState",
    "ConsentStatus",
    "ConsentStore",
    "Decision",
    "LawfulBasis",
    "NoConsentReason",
    "Obligation",
    "ObligationCode",
    "Outcome",
    "Policy",
    "PolicyError",
    "Problem",
    "ReasonCode",
    "Role",
    "Rule",
    "Subscriber",
    "canonical_form",
    "consent_key",
    "explain",
    "policy_digest",
]
