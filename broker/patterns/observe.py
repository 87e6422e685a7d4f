"""What a routed event says that a detector needs (:class:`Observation`).

Read from the detector's own feed copy: the router has already checked the
event (schema, signature, consent, who may speak for the child), derived the
partnership pseudonym, and redacted what the detector is not entitled to.
An event without a pseudonym yields nothing: it cannot be joined to a child.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from broker.patterns.detectors import Kind, Observation
from broker.patterns.normalise import person_name, place_key, things

MISSING = "safeshare.MissingEpisode"
INTERVIEW = "safeshare.ReturnHomeInterview"
ALERT = "safeshare.PatternAlert"


def ms(value: Any) -> int:
    """An Avro timestamp-millis as read (aware datetime) or given (int), in ms."""
    if isinstance(value, datetime):
        return int(round(value.timestamp() * 1000))
    return int(value)


def payload_of(event: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    payload = event.get("payload")
    if isinstance(payload, tuple):
        return payload[0], payload[1]
    if isinstance(payload, Mapping):  # JSON form: {"type": "MissingEpisode", ...}
        return "safeshare." + str(payload.get("type", "")), payload
    return "", {}


def observations(event: Mapping[str, Any]) -> Iterator[Observation]:
    """Every observation in one event (none from an alert: alerts are not evidence)."""
    subject = event.get("subject") or {}
    child = subject.get("pseudonym")
    if not child:
        return
    eid = event["event_id"]
    at = ms(event["occurred_at"])
    la = subject.get("local_authority") or ""
    name, payload = payload_of(event)
    if name == ALERT:
        return

    def obs(kind: str, key: str, block: str = "") -> Observation:
        return Observation(kind, key, child, eid, at, block, la)

    if level := event.get("risk_level"):
        yield Observation(Kind.RISING_RISK, child, child, eid, at, "", la, str(level))
    texts: list[str | None] = [event.get("summary")]
    if name == MISSING and payload.get("episode_type") in (None, "MISSING"):
        yield obs(Kind.REPEAT_MISSING, child)
        ended = payload.get("ended_at")
        if ended is not None or payload.get("found"):
            # Found or returned: a return-home interview is due from then.
            yield Observation(Kind.RETURNED, child, child, eid,
                              at if ended is None else ms(ended), "", la)
        for field in ("last_seen", "found"):
            if (k := place_key(payload.get(field))) is not None:
                yield obs(Kind.SHARED_PLACE, k.key, k.block)
    if name == INTERVIEW:
        if payload.get("outcome") != "NOT_REACHED":  # held (a child may decline to talk)
            held = payload.get("held_at")
            yield Observation(Kind.INTERVIEWED, child, child, eid,
                              at if held is None else ms(held), "", la)
        for place in payload.get("places_mentioned") or ():
            if (k := place_key(place)) is not None:
                yield obs(Kind.SHARED_PLACE, k.key, k.block)
        for person in payload.get("people_mentioned") or ():
            texts.append(person.get("description"))
            if (n := person_name(person.get("description"))) is not None:
                yield obs(Kind.SHARED_PERSON, "name:" + n)
        texts.append(payload.get("disclosures"))
    seen: set[str] = set()
    for key in sorted(things(texts)):
        if key not in seen:
            seen.add(key)
            yield obs(Kind.SHARED_PERSON, key)
