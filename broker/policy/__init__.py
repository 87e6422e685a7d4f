"""Consent and need-to-know policy: lawful, minimal, explainable decisions.

Pure Python, no Kafka. The router loads one :class:`Policy` at start (a policy
that fails to load raises :class:`PolicyError`: the router must not start),
keeps a :class:`ConsentStore` of the consent records it accepted, and for every event asks
``policy.decide_all(event, consents, clock.now_ms())``. Each :class:`Decision`
is a value: SHARE with the data classes to keep, or WITHHOLD with a reason.
:func:`explain` puts a decision into words a data protection officer can follow.

The policy file (``deploy/policy/example-mash.yaml`` is a commented example)::

    version: 1
    name: <text>
    local_authorities: {<code as in subject.local_authority>: <name>, ...}
    purposes: {<ConsentPurpose symbol>: <text>, ...}
    roles:
      <role>: {description, law_enforcement: bool, data_classes: [<class>, ...]}
    agencies:      # ingest topic <ns>.ingest.<id>
      - {id, name, type: <AgencyType>, local_authorities: [...], keys: [{id, public_key}]}
    subscribers:   # feed topic <ns>.feed.<id>
      - {id, organisation, description?, roles: [...], local_authorities: [...],
         purposes: [...], feed_keys?: [{id, kem, public_key, not_before?, not_after?}]}
         # feed_keys: the feed is confidential, copies sealed with HPKE (broker.signing.feeds)
    rules:         # first match wins; no match: withheld (default deny)
      - id: <id>
        description: <text>
        when:      # every condition optional; absent = any
          source_agencies, source_agency_types, categories, payload_types,
          subscribers, subscriber_roles: [...]
          min_risk: LOW|MEDIUM|HIGH|CRITICAL
          break_glass: true|false      # only emergency / only ordinary events
          cross_area: true             # may reach subscribers outside the child's area
        effect: share | withhold
        reason: <text>                 # required for withhold
        purpose: <purpose>             # share: consent looked up for it; subscriber must hold it
        without_consent: {min_risk: <level>}   # share: the no-consent override, if permitted
        data_classes: [...]            # share: narrow the roles' grants
        explicit_grants: [referrer, third_party]
        obligations: [REVIEW_WITHIN_72H]

Its version is the SHA-256 of its canonical form (:func:`canonical_form`: the
parsed YAML as RFC 8785 canonical JSON), so comments and layout do not change it.
The decision procedure and the law behind it are in :mod:`broker.policy.engine`.
"""

from broker.policy.consent import (
    ConsentLookup,
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    ConsentStore,
    ConsentVerdict,
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
    "ConsentVerdict",
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
