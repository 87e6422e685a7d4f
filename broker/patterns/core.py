"""The detector's turn, without Kafka: feed records in, changelog and alerts out.

Input is the detector's own feed (``safeshare.feed.safeshare-patterns``): the
router's minimised copies of the events the policy lets it see. Each new
observation is written to the state changelog (key ``o|<id>``, a tombstone when
it leaves its window); each alert raised or updated is written to the changelog
(``a|<alert id>``) and published as a ``safeshare.PatternAlert`` event on the
detector's own ingest topic, so the router shares and audits it like any event.
Every alert version has a deterministic event id (UUID v5 of alert id and
version): a replayed turn publishes the same event and the router's dedup
drops the copy.

An ``IdentityNotice`` (a person linked or unlinked two children) is applied
to the detectors (:meth:`Detectors.relink`), written to the changelog (key
``l|<merged-in pseudonym>``, a tombstone on unlink) and may raise or update
alerts as an observation does; an alert a link leaves below its threshold gets
a version saying so, naming the decision.

Changelog values are compact JSON: internal state, read back only by this
module, never shared.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, NamedTuple

from broker.codec import Codec
from broker.codec.exceptions import CodecError
from broker.patterns.detectors import DAY_MS, AlertState, Detectors, Kind, Observation, Threshold
from broker.patterns.observe import ALERT, observations, payload_of
from broker.signing.events import AgencySigner, sign_message
from broker.signing.feeds import IDENTITY_NOTICE, feed_schema

log = logging.getLogger(__name__)

AGENCY = "safeshare-patterns"
FEED_RECORD = "safeshare.FeedRecord"
EVENT = "safeshare.ConcernEvent"
_NS = uuid.UUID("4d6f1e2a-5b8c-4f3d-9a7e-0c1b2d3e4f50")

_BELOW = ("Below its threshold since a person linked children it counted as one child, or "
          "separated them: {n} of {threshold}. Kept for review, not withdrawn.")
_SUMMARY = {
    Kind.REPEAT_MISSING: "A child missing {n} times within {days} days.",
    Kind.SHARED_PLACE: "{n} children last seen, found or named at one place within {days} days.",
    Kind.SHARED_PERSON: "{n} children naming the same adult, vehicle or phone within {days} days.",
    Kind.OVERDUE_INTERVIEW: "A child's return-home interview not held within {hours} hours "
                            "of the return ({n} time(s) within {days} days).",
    Kind.OVERDUE_AREA: "{n} children in one area without a return-home interview within "
                       "{hours} hours of their return, within {days} days.",
    Kind.RISING_RISK: "A child's risk level rising {n} time(s) across recent events "
                      "within {days} days.",
}


class Out(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None


class PatternsCore:
    def __init__(self, *, codec: Codec, ingest_topic: str, state_topic: str,
                 thresholds: Mapping[str, Threshold], now_ms: Any,
                 signer: AgencySigner | None = None) -> None:
        self.codec = codec
        self.signer = signer  # the detector's agency key, where the policy requires one
        self.ingest_topic = ingest_topic
        self.state_topic = state_topic
        self.now_ms = now_ms
        self.detectors = Detectors(thresholds=dict(thresholds))
        self.places: dict[str, dict[str, Any]] = {}  # place key -> first description
        self._watermark_day = 0
        self._watermark_ms = 0
        self._newest_ms = 0

    def reset(self) -> None:
        self.detectors = Detectors(thresholds=self.detectors.thresholds)
        self.places = {}
        self._watermark_day = 0
        self._watermark_ms = 0
        self._newest_ms = 0

    # -- changelog ----------------------------------------------------------------------
    def restore(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        k = key.decode()
        if value is None:
            self._forget(k)
            return
        data = json.loads(value)
        if k.startswith("o|"):
            obs = Observation(**data)
            self.detectors.remember(obs)
            # The newest event read before the restart: overdue interviews are decided
            # from it on, as they would have been without the restart.
            self._newest_ms = max(self._newest_ms, obs.at_ms)
        elif k.startswith("a|"):
            data["children"], data["event_ids"] = tuple(data["children"]), tuple(data["event_ids"])
            data["local_authorities"] = tuple(data["local_authorities"])
            self.detectors.restore_alert(AlertState(**data))
        elif k.startswith("l|"):
            self.detectors.links.set(k[2:], data["into"])
        elif k.startswith("p|"):
            self.places.setdefault(k[2:], data)

    def _forget(self, k: str) -> None:
        """A tombstone read after its observation or link: forget it (a rebuild reads
        in order)."""
        if k.startswith("l|"):
            self.detectors.links.set(k[2:], None)
        elif k.startswith("o|"):
            kind, obs_key = k[2:].split("|", 2)[:2]
            per = self.detectors._obs.get(kind, {}).get(obs_key)
            if per is not None:
                per[:] = [o for o in per if o.id != k[2:]]

    # -- a turn ---------------------------------------------------------------------------
    def on_feed(self, value: bytes | None) -> list[Out]:
        """One feed record: its observations, and the alerts they raise or update."""
        if feed_schema(self.codec, value or b"") == IDENTITY_NOTICE:
            return self.on_notice(value or b"")
        try:
            record = self.codec.decode(value or b"", FEED_RECORD)
        except CodecError as exc:
            log.warning("patterns: unreadable feed record skipped: %s", exc)
            return []
        event = record["event"]
        if payload_of(event)[0] == ALERT:
            return []
        batch = list(observations(event))
        added, fired = self.detectors.observe(batch)
        if added:
            self._newest_ms = max(self._newest_ms, *(o.at_ms for o in added))
        out = [Out(self.state_topic, f"o|{o.id}".encode(), _json(asdict(o))) for o in added]
        for key, place in _places(event).items():
            if key not in self.places:  # the first description of a place names it in alerts
                self.places[key] = place
                out.append(Out(self.state_topic, f"p|{key}".encode(), _json(place)))
        out += self._alerts(added, fired)
        out += self._expire(added)
        return out

    def on_notice(self, value: bytes) -> list[Out]:
        """A LINK or UNLINK told to the detector's feed: the link in the changelog,
        and the alerts it raises, updates or leaves below their threshold."""
        try:
            notice = self.codec.decode(value, IDENTITY_NOTICE)
        except CodecError as exc:
            log.warning("patterns: unreadable identity notice skipped: %s", exc)
            return []
        survivor, other = notice["pseudonym"], notice["other_pseudonym"]
        if not survivor or not other:  # the detector's feed shows pseudonyms: not expected
            log.warning("patterns: identity notice %s names no pseudonyms; skipped",
                        notice["notice_id"])
            return []
        links = self.detectors.links
        if notice["action"] == "LINK":
            into: str | None = survivor
        elif links.into.get(other) == survivor:
            into = None
        else:  # an unlink of a link this detector never folded: nothing to undo
            return []
        fired = self.detectors.relink(other, into, notice["decision_id"])
        if links.into.get(other) != into:
            log.warning("patterns: identity notice %s would link a child into itself; skipped",
                        notice["notice_id"])
            return []
        value_out = None if into is None else _json({"into": into,
                                                     "decision_id": notice["decision_id"]})
        return [Out(self.state_topic, f"l|{other}".encode(), value_out),
                *self._alerts([], fired)]

    def end_turn(self) -> list[Out]:
        """After a turn's records: returns whose interview is now overdue.

        Decided by event time (the newest event read, never ahead of the wall clock,
        so an event dated in the future cannot make every interview overdue) and only
        when the service has read every feed partition to its end, so an interview
        in a partition read after later events of another still counts.
        The watermark never goes back, but every turn judges against it: a return
        reported late (older than the newest event already read) is due at once.
        """
        watermark = max(self._watermark_ms, min(self._newest_ms, self.now_ms()))
        if not watermark:
            return []
        self._watermark_ms = watermark
        added, fired = self.detectors.overdue(watermark)
        return self._alerts(added, fired)

    def _alerts(self, added: list[Observation], fired: list[AlertState]) -> list[Out]:
        """Changelog records of the overdue observations and alerts, and the alert events."""
        out = [Out(self.state_topic, f"o|{o.id}".encode(), _json(asdict(o)))
               for o in added if o.kind in (Kind.OVERDUE_INTERVIEW, Kind.OVERDUE_AREA)]
        for alert in fired:
            out.append(Out(self.state_topic, f"a|{alert.alert_id}".encode(), _json(asdict(alert))))
            out.append(self._alert_event(alert, latest=_latest(added, alert)))
        return out

    def _expire(self, added: list[Observation]) -> list[Out]:
        if not added:
            return []
        day = max(o.at_ms for o in added) // DAY_MS
        if day <= self._watermark_day:
            return []
        self._watermark_day = day
        gone = self.detectors.expire(day * DAY_MS)
        return [Out(self.state_topic, f"o|{o.id}".encode(), None) for o in gone]

    def _alert_event(self, alert: AlertState, latest: Observation | None) -> Out:
        rule = self.detectors.thresholds[alert.kind]
        # Under the pseudonym it is counted as (a linked child's survivor).
        child = self.detectors.links.canonical(
            latest.child if latest is not None else alert.children[-1])
        la = (latest.local_authority if latest is not None and latest.local_authority
              else (alert.local_authorities or ("",))[0])
        if alert.kind in (Kind.REPEAT_MISSING, Kind.OVERDUE_INTERVIEW):
            n = len(alert.event_ids)
        elif alert.kind == Kind.RISING_RISK:
            n = len(alert.event_ids) - 1
        else:
            n = len({self.detectors.links.canonical(c) for c in alert.children})
        hours = self.detectors.thresholds[Kind.OVERDUE_INTERVIEW].hours
        summary = _SUMMARY[alert.kind].format(n=n, days=rule.days, hours=hours)
        if not alert.meets:
            summary = _BELOW.format(n=alert.count, threshold=rule.count)
        place = self.places.get(alert.key) if alert.kind == Kind.SHARED_PLACE else None
        matched = alert.key.split(":", 1)[1] if alert.kind == Kind.SHARED_PERSON else None
        event = {
            "event_id": str(uuid.uuid5(_NS, f"{alert.alert_id}:{alert.version}")),
            "occurred_at": alert.last_ms,
            "reported_at": max(self.now_ms(), alert.last_ms),
            "source": {"agency_id": AGENCY, "agency_type": "OTHER", "system": "safeshare patterns"},
            "reporter": {"role": "pattern detector", "name": None, "organisation": None,
                         "contact": None},
            "subject": {"pseudonym": child, "local_authority": la},
            "category": "PATTERN",
            "risk_level": "HIGH",
            "summary": summary,
            "sharing": {
                "no_consent_reason": "WOULD_PREJUDICE_PROTECTION",
                "justification": "A pattern of exploitation across children; asking would "
                                 "alert those exploiting them.",
                "break_glass": False,
            },
            "payload": ("safeshare.PatternAlert", {
                "alert_id": alert.alert_id, "version": alert.version, "kind": alert.kind,
                "threshold": rule.count, "window_days": rule.days,
                "children": list(alert.children), "evidence": list(alert.event_ids),
                "first_at": alert.first_ms, "last_at": alert.last_ms,
                "place": place, "matched": matched,
                "meets_threshold": alert.meets, "identity_decision": alert.decision or None,
            }),
            "signature": None,
        }
        value = self.codec.encode(event, EVENT)
        if self.signer is not None:  # Ed25519 is deterministic: a replay signs the same bytes
            value = sign_message(value, self.signer)
        return Out(self.ingest_topic, child.encode(), value)


def _latest(added: list[Observation], alert: AlertState) -> Observation | None:
    """The newest observation that made ``alert`` (its child and area are the subject's)."""
    for o in reversed(added):
        if o.kind == alert.kind and o.key == alert.key:
            return o
    return None


def _places(event: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The event's places by key (an alert describes its place as first seen)."""
    from broker.patterns.normalise import place_key  # noqa: PLC0415

    _, payload = payload_of(event)
    raw = [payload.get("last_seen"), payload.get("found"), *(payload.get("places_mentioned")
                                                             or ())]
    by_key: dict[str, dict[str, Any]] = {}
    for p in raw:
        if p and (k := place_key(p)) is not None:
            by_key.setdefault(k.key, dict(p))
    return by_key


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
