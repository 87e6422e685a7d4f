"""Identity notices: a person's LINK or UNLINK told to the feeds that hold the children.

A subscriber reading its feed keyed by pseudonym (a police or health system)
would otherwise keep two children after a link, or one after an unlink. So the
router, in the transaction that applies the decision
(broker/routing/identity_decisions.py), writes an ``IdentityNotice`` to the
feed of each subscriber that needs it, and only those (need to know):

- LINK: each subscriber that received records under the pseudonym merged in
  (``other_pseudonym``); one that holds only the survivor's records keeps one
  child and is not told of another pseudonym;
- UNLINK: each subscriber told of that link, and each that received records
  under the merged child since (its chronology may mix the two).

Who holds records under which child is kept in the identity index
(:func:`note_shares`: each child's entry lists its recipients), so it is
written in the share's transaction, rebuilt after a restart and taken back
when a transaction aborts. The notice is keyed as that feed's records of the
child merged in or split out are (the pseudonym, or the opaque key of a feed
that does not see it), so it sorts after that child's last records (LINK) or
before its next ones (UNLINK); it shows the pseudonyms only to a feed whose
copies showed them, never who decided; a confidential feed gets it sealed
(HPKE) like its copies. Its id derives from the decision and the subscriber,
and it commits with the decision's offsets: a decision replayed after a crash
writes it once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from broker.routing.core import Outbound, Routed, RoutingCore

log = logging.getLogger(__name__)

NOTICE: Final = "safeshare.IdentityNotice"
_NOTICE_NS: Final = uuid.UUID("0f6f3c1e-7d2a-4b55-9a43-5e2f1c8b7d21")


def notice_id(decision_id: str, subscriber: str) -> str:
    """The notice's id: derived, so a replayed decision gives the same one."""
    return str(uuid.uuid5(_NOTICE_NS, f"{decision_id}\x00{subscriber}"))


def notices(
    core: RoutingCore, decision: Mapping[str, Any], told: Mapping[str, bool], now_ms: int
) -> list[Outbound]:
    """The notices of an applied LINK or UNLINK, one per subscriber in ``told``
    (subscriber -> whether its copies showed the pseudonym). Raises
    FeedKeyError if a confidential feed has no key valid now (the caller
    takes the decision back: nothing half-announced)."""
    from broker.routing.core import Outbound  # noqa: PLC0415 - core imports this module

    survivor, other = decision["pseudonym"], decision["other_pseudonym"]
    lookup = getattr(core.decider, "subscriber", None)
    out: list[Outbound] = []
    for subscriber in sorted(told):
        if lookup is not None and lookup(subscriber) is None:
            log.warning("identity decision %s: a subscriber that held the child's records is"
                        " no longer in the policy; its feed is not told", decision["decision_id"])
            continue
        topic, sealing = core._to.of(subscriber)
        shown = told[subscriber]
        plain_key = shown and not sealing  # as the copies' keys (broker/routing/core.py)
        key = core._to.key(other, plain_key)
        survivor_key = core._to.key(survivor, plain_key)
        assert key is not None and survivor_key is not None
        nid = notice_id(decision["decision_id"], subscriber)
        record = {
            "notice_id": nid,
            "decision_id": decision["decision_id"],
            "subscriber": subscriber,
            "action": decision["action"],
            "pseudonym": survivor if shown else None,
            "other_pseudonym": other if shown else None,
            "record_key": survivor_key.decode(),
            "other_record_key": key.decode(),
            "decided_at": _ms(decision["decided_at"]),
            "applied_at": now_ms,
        }
        data = core.codec.encode(record, NOTICE)
        if sealing:
            data = core._to.seal(sealing, subscriber, nid, data, now_ms)
        out.append(Outbound(topic, key, data))
    return out


def note_shares(
    core: RoutingCore, routed: Routed, pseudonym: str, event_id: str, shown: Mapping[str, bool]
) -> None:
    """After an event is shared under ``pseudonym``: the child's index entry joins
    ``routed``'s outputs if the shares changed it (new recipients; any share of a
    linked child). It replaces an entry of the same child written earlier for
    this event (:func:`~broker.routing.identity_decisions.name_subject`): one
    record, the child's whole state."""
    assert core.identity is not None
    noted = core.identity.note_shares(pseudonym, event_id, shown)
    if noted is None:
        return
    from broker.routing.core import Outbound  # noqa: PLC0415 - after the common early return

    outputs, topic = routed.outputs, core.topics.identity
    for i in range(len(outputs) - 1, -1, -1):
        if outputs[i].topic == topic and outputs[i].key == noted[0]:
            outputs[i] = Outbound(topic, *noted)
            return
    outputs.append(Outbound(topic, *noted))


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)
