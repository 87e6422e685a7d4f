"""Naming the child, review items out, link and unlink decisions in.

- :func:`name_subject`: an event without a pseudonym is named by the router
  (broker/routing/identity.py); its index entry goes with its shares.
- :func:`consent_subject`: the child of a consent record without a
  pseudonym, only when certain (its NHS number, or an automatic link);
  consent is never applied to a provisional child.
- :func:`review_outputs`: an event the linkage model could not place (REVIEW:
  routed under a provisional pseudonym of its own) raises an
  ``IdentityReview`` on the review topic of each subscriber the policy's
  ``identity.deciders`` names for the child's local authority (all deciders
  if none covers it), in the transaction that routes the event.
- :func:`pair_reviews`: two router instances named one child twice at the same
  moment (broker/routing/identity.py, ``Pair``): one review item for the pair,
  its id derived from the two pseudonyms so that both instances raising it
  give one item (the desk collapses repeats), with a REVIEW_RAISED audit leaf;
  written in the router's next transaction. Never a link: a person decides.
- :func:`handle_decision`: a message of a subscriber's identity decisions
  topic. Accepted only if it is an ``IdentityDecision`` of the topic's owner
  (Kafka ACLs let only that subscriber write it), naming the person who
  decided, at a plausible time, not seen before, from a subscriber the policy
  entitles (``identity.deciders``), and applicable to the index (both
  children known; an unlink only of what was linked). Applied, a link or
  unlink rewrites the children's index entries in the same transaction; each
  decision is a LINKED, UNLINKED or KEPT_APART audit leaf (no personal data:
  keyed pseudonyms and digests); an UNLINKED leaf lists the shares made under
  the merged identity since the link. A link or unlink is told, in the same
  transaction, to the feeds that hold the children's records
  (broker/routing/identity_notices.py). Anything else is quarantined with its
  reason (and so audited).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from broker.codec.exceptions import CodecError, EncodingError, UnknownSchemaError
from broker.identity.decisions import DecisionProblem
from broker.identity.resolver import Placed, Resolution
from broker.routing.identity_notices import notices
from broker.signing.feeds import FeedKeyError

if TYPE_CHECKING:
    from broker.routing.core import Inbound, Outbound, Routed, RoutingCore

log = logging.getLogger(__name__)

DECISION: Final = "safeshare.IdentityDecision"
REVIEW_ITEM: Final = "safeshare.IdentityReview"
_REVIEW_NS: Final = uuid.UUID("6d0b3c52-4f6a-4d8e-9a59-3c1e2b7f0a13")
#: Domain of the keyed digest of a decider's name in the audit leaf.
_PERSON: Final = "safeshare/identity/decided-by\x00"


def review_id(event_id: str) -> str:
    """The review item's id: derived from the event, so a replay gives the same one."""
    return str(uuid.uuid5(_REVIEW_NS, event_id))


def pair_review_id(a: str, b: str) -> str:
    """The review item's id for two children met by two instances: derived from the
    pair (in either order), so every instance raising it gives the same id."""
    first, second = sorted((a, b))
    return str(uuid.uuid5(_REVIEW_NS, f"pair\x00{first}\x00{second}"))


def name_subject(
    core: RoutingCore, event: dict[str, Any], routed: Routed, now_ms: int,
    placed: Placed | None = None,
) -> str:  # fmt: skip
    """Write the router's pseudonym into ``event``; the index entry (and review items)
    join ``routed``'s outputs. ``placed``: the match :func:`consent_subject` made."""
    from broker.routing.core import Outbound  # noqa: PLC0415

    assert core.identity is not None
    origin = {"event_id": str(event["event_id"]),
              "agency": str(event["source"]["agency_id"]),
              "local_authority": str(event["subject"].get("local_authority") or "")}
    resolution = core.identity.resolve(event["subject"], placed, origin)
    pseudonym = event["subject"]["pseudonym"] = resolution.pseudonym
    key, value = resolution.index_record
    assert value is not None  # the index holds at least this event's record
    routed.outputs.append(Outbound(core.topics.identity, key, value))
    routed.identity = resolution.decision
    if resolution.decision == "REVIEW":
        routed.outputs.extend(review_outputs(core, event, resolution, now_ms))
    return pseudonym


def consent_subject(
    core: RoutingCore, event: Mapping[str, Any]
) -> tuple[str | None, Placed | None, str]:
    """The pseudonym a consent record without one is for and where the index placed
    it (for :func:`name_subject`), or None and why not.

    Consent decides shares about a child, so it is applied only to a child the
    router is certain of: one the record links to automatically (its NHS
    number or UPN, or a match above the policy's upper threshold), or the
    child of its NHS number (whose events derive the same pseudonym). A record
    the model would send to review, or naming a new child without an NHS
    number, is refused: consent never lands on a provisional identity. Nothing
    is added to the index here; :func:`name_subject` does that once the record
    is accepted.
    """
    if core.identity is None:
        return None, None, ("subject.pseudonym is null and the router holds no partnership"
                            " key to derive it: consent not applied")
    pseudonym, placed = core.identity.certain(event["subject"])
    m = placed[1]
    if pseudonym is None:
        return None, None, (f"subject.pseudonym is null and the subject is not one known"
                            f" child for certain (linkage {m.decision}, match probability"
                            f" {m.probability:.3f}): consent is applied only to a child named"
                            " by pseudonym, NHS number or an automatic link")
    return pseudonym, placed, ""


def review_outputs(
    core: RoutingCore, event: Mapping[str, Any], r: Resolution, now_ms: int
) -> list[Outbound]:
    """The review items an event routed under a provisional pseudonym raises."""
    from broker.routing.core import Outbound  # noqa: PLC0415 - core imports this module

    deciders = _deciders(core, str((event.get("subject") or {}).get("local_authority") or ""))
    if not deciders:
        log.warning("event %s needs an identity review but the policy names no"
                    " identity.deciders", event["event_id"])
        return []
    item = {
        "review_id": review_id(event["event_id"]),
        "event_id": event["event_id"],
        "source_agency": event["source"]["agency_id"],
        "provisional": r.pseudonym,
        "candidate": r.candidate,
        "match_probability": float(r.probability),
        "raised_at": now_ms,
    }
    data = core.codec.encode(item, REVIEW_ITEM)
    return [Outbound(core.topics.identity_reviews(s), r.pseudonym.encode(), data)
            for s in deciders]


def pair_reviews(
    core: RoutingCore, now_ms: int | None = None
) -> tuple[list[Outbound], list[bytes]]:
    """The review items (and their audit leaves) for the pairs of children the
    router met while learning another instance's index entries (module docstring);
    ``now_ms`` defaults to the core's clock, read only if a pair waits."""
    if core.identity is None or not core.identity.pairs_pending():
        return [], []  # every transaction asks: nothing more than this when none waits
    from broker.routing.core import Outbound  # noqa: PLC0415

    if now_ms is None:
        now_ms = core.clock.now_ms()
    outputs: list[Outbound] = []
    leaves: list[bytes] = []
    for pair in core.identity.take_pairs():
        deciders = _deciders(core, pair.local_authority)
        if not deciders:
            log.warning("two children met across router instances need an identity review"
                        " but the policy names no identity.deciders")
            continue
        rid = pair_review_id(*pair.children)
        item = {
            "review_id": rid,
            "event_id": pair.event_id,
            "source_agency": pair.agency,
            "provisional": pair.provisional,
            "candidate": pair.candidate,
            "match_probability": float(pair.probability),
            "raised_at": now_ms,
        }
        data = core.codec.encode(item, REVIEW_ITEM)
        outputs += [Outbound(core.topics.identity_reviews(s), rid.encode(), data)
                    for s in deciders]
        leaves.append(core._leaves.other({
            "kind": "REVIEW_RAISED",
            "time_ms": now_ms,
            "event_id": rid,
            "event_digest": hashlib.sha256(data).hexdigest(),
            "source_agency": pair.agency,
            "subject": core.subject_hmac(pair.candidate),
            "outcome": "REVIEW",
            "rule_id": "identity.review_above",
            "reason": f"one child named twice by two router instances: review {rid} for"
                      f" {', '.join(deciders)}",
            "policy_digest": str(getattr(core.decider, "digest", "") or ""),
            "identity_other": core.subject_hmac(pair.provisional),
        }))  # fmt: skip
        log.info("identity review %s raised: two router instances named one child twice"
                 " (match probability %.3f)", rid, pair.probability)
    return outputs, leaves


def _deciders(core: RoutingCore, local_authority: str) -> list[str]:
    named = tuple(getattr(core.decider, "identity_deciders", ()) or ())
    lookup = getattr(core.decider, "subscriber", None)
    covering = [
        s for s in named
        if lookup is not None and (sub := lookup(s)) is not None
        and local_authority in sub.local_authorities
    ]  # fmt: skip
    return covering or list(named)


def handle_decision(core: RoutingCore, msg: Inbound) -> Routed:
    """Apply or quarantine one message of an identity decisions topic (module docstring)."""
    from broker.routing.core import Outbound, Routed  # noqa: PLC0415

    routed = Routed()
    owner = core.topics.subscriber_of_identity_decisions(msg.topic)
    routed.agency = owner
    if msg.value is None:
        return core._quarantine(msg, "UNDECODABLE", "empty message (no value)", routed)
    try:
        d = core.codec.decode(msg.value, DECISION)
    except UnknownSchemaError as exc:
        return core._quarantine(msg, "UNKNOWN_SCHEMA", str(exc), routed)
    except CodecError as exc:
        return core._quarantine(msg, "UNDECODABLE", str(exc), routed)
    routed.event_id = decision_id = d["decision_id"]
    routed.agency = subscriber = d["subscriber_id"]
    if subscriber != owner:
        return core._quarantine(
            msg, "AGENCY_MISMATCH",
            f"identity decision claims subscriber {subscriber!r} but arrived on {msg.topic}"
            f" owned by {owner!r}", routed,
        )  # fmt: skip
    problem = _shape_problem(d)
    if problem:
        return core._quarantine(msg, "SCHEMA_INVALID", problem, routed)
    now = core.clock.now_ms()
    try:
        core.codec.check_times(d, now, core.time_bounds, DECISION)
    except EncodingError as exc:
        return core._quarantine(msg, "SCHEMA_INVALID", str(exc), routed)
    digest = hashlib.sha256(msg.value).hexdigest()
    survivor, other = d["pseudonym"], d["other_pseudonym"]
    subject = core.subject_hmac(survivor)
    if decision_id in core.seen_event_ids:
        routed.duplicate = True
        audited = core._leaves.event(
            event_id=decision_id, event_digest=digest, source_agency=subscriber, subject=subject
        )
        routed.leaves.append(core._leaves.duplicate(audited, time_ms=now))
        return routed
    judge = getattr(core.decider, "identity_entitlement", None)
    refusal = (judge(subscriber) if judge is not None
               else "the policy names no one who may link or unlink children")
    if refusal is not None:
        return core._quarantine(msg, "NOT_ENTITLED", refusal, routed)
    if core.identity is None:
        return core._quarantine(
            msg, "OTHER", "the router holds no partnership key: no identity index", routed
        )
    shares: tuple[str, ...] = ()
    records: list[tuple[bytes, bytes | None]] = []
    told: dict[str, bool] = {}
    try:
        if d["action"] == "LINK":
            records, told = core.identity.link(survivor, other)
        elif d["action"] == "UNLINK":
            records, shares, told = core.identity.unlink(survivor, other)
        else:  # KEEP_APART: two children, as they are; the decision answers the review
            for name, p in (("pseudonym", survivor), ("other_pseudonym", other)):
                if not core.identity.knows(p):
                    raise DecisionProblem(f"{name} is not a child the identity index knows")
    except DecisionProblem as exc:
        return core._quarantine(msg, "OTHER", f"identity decision not applicable: {exc}", routed)
    try:
        told_feeds = notices(core, d, told, now)
    except (FeedKeyError, CodecError) as exc:  # nothing half-announced: taken back whole
        core.identity.undo_last()
        return core._quarantine(
            msg, "OTHER", f"identity decision not applied: its notice cannot be written: {exc}",
            routed,
        )  # fmt: skip
    core.seen_event_ids.add(decision_id)
    routed.outputs.extend(Outbound(core.topics.identity, k, v) for k, v in records)
    routed.outputs.extend(told_feeds)
    kind = _LEAF_KIND[d["action"]]
    routed.identity = kind
    routed.leaves.append(core._leaves.other({
        "kind": kind,
        "time_ms": now,
        "event_id": decision_id,
        "event_digest": digest,
        "source_agency": subscriber,
        "subject": subject,
        "outcome": d["action"],
        "rule_id": "identity.deciders",
        "reason": f"review {d['review_id']}" if d.get("review_id") else "",
        "policy_digest": str(getattr(core.decider, "digest", "") or ""),
        "identity_other": core.subject_hmac(other),
        "identity_decided_by": core.subject_hmac(_PERSON + d["decided_by"]),
        "identity_shares": list(shares),
    }))  # fmt: skip
    log.info("identity decision %s event=%s applied: %s by %s (%d share(s) under the merged"
             " child, %d feed(s) told)", msg.where, decision_id, kind, subscriber, len(shares),
             len(told_feeds))
    return routed


#: The audit leaf of each decision the router applies.
_LEAF_KIND: Final = {"LINK": "LINKED", "UNLINK": "UNLINKED", "KEEP_APART": "KEPT_APART"}


def _shape_problem(d: Mapping[str, Any]) -> str | None:
    if d["action"] not in _LEAF_KIND:
        return (f"identity decision action {d['action']!r}: expected LINK, UNLINK or"
                " KEEP_APART")
    for name in ("pseudonym", "other_pseudonym"):
        if not d.get(name):
            return f"identity decision without {name}"
    if not (d.get("decided_by") or "").strip():
        return "identity decision without decided_by: a person must be named"
    return None
