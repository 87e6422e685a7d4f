"""Which pseudonyms the router has applied as one child, for the workspace's chronology.

When a deciding team links a provisional child to a known one, the router moves
the index and routes later events under the child that stays; what the team
received under the other pseudonym before the link stays under that pseudonym
in its feed. A chronology of the child must show both.

Only links the router *applied* count: a decision on a team's decisions topic
may have been quarantined (not entitled, unknown child) or be a replay. The
router's LINKED and UNLINKED audit leaves name the decision they applied by the
SHA-256 of its bytes (``event_digest``), so a link is a decision whose exact
bytes a LINKED leaf names; the pseudonyms come from the decision (the leaf holds
only keyed ones). :class:`LinkFollower` follows the audit topic and every
deciding team's decisions topic from the beginning and replays the applied
decisions in log order with the rule the subject-access report uses
(:func:`broker.audit.verify.replay_links`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable

from broker.audit.exceptions import MalformedError
from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.audit.verify import replay_links
from broker.codec import Codec
from broker.codec.exceptions import CodecError
from broker.identity.desk import DECISION
from broker.kafka.structs import Record
from broker.topics import Topics
from broker.workspace.store import TopicFollower

log = logging.getLogger(__name__)

_IDENTITY_MARKS = (b'"kind":"LINKED"', b'"kind":"UNLINKED"')


class LinkFollower:
    """The applied links of a partnership's children, kept current on daemon threads."""

    def __init__(self, bootstrap: str, topics: Topics, codec: Codec,
                 deciders: Iterable[str]) -> None:
        self._codec = codec
        self._lock = threading.Lock()
        # (time, partition, offset, n) -> (a link?, digest of the decision applied)
        self._applied: list[tuple[tuple[int, int, int, int], bool, str]] = []
        self._decisions: dict[str, tuple[str, str]] = {}  # digest -> (stays, other)
        self._followers = [TopicFollower(bootstrap, topics.audit, self._leaves,
                                         "workspace-links-audit")]
        self._followers += [
            TopicFollower(bootstrap, topics.identity_decisions(d), self._decision,
                          f"workspace-links-{d}")
            for d in sorted(set(deciders))
        ]

    @property
    def caught_up(self) -> bool:
        """Whether what each topic held at start has been read."""
        return all(f.caught_up.is_set() for f in self._followers)

    def _leaves(self, r: Record) -> None:
        value = r.value or b""
        if not any(mark in value for mark in _IDENTITY_MARKS):
            return  # most audit messages: shares, consultations, clocks
        try:
            leaves = [AuditLeaf.from_bytes(b) for b in decode_batch(value)]
        except MalformedError:
            log.warning("workspace links: an audit message could not be read; skipped")
            return
        with self._lock:
            for n, leaf in enumerate(leaves):
                if leaf.kind in (LeafKind.LINKED, LeafKind.UNLINKED):
                    self._applied.append(((leaf.time_ms, r.partition, r.offset, n),
                                          leaf.kind is LeafKind.LINKED, leaf.event_digest))

    def _decision(self, r: Record) -> None:
        try:
            d = self._codec.decode(r.value or b"", DECISION)
        except CodecError:
            return  # the router quarantined it too: never applied
        if d.get("pseudonym") and d.get("other_pseudonym"):
            with self._lock:
                self._decisions[hashlib.sha256(r.value or b"").hexdigest()] = (
                    d["pseudonym"], d["other_pseudonym"])

    def group(self, pseudonym: str) -> frozenset[str]:
        """``pseudonym`` and every pseudonym applied as the same child, as the log stands."""
        with self._lock:
            applied = sorted(self._applied, key=lambda a: a[0])
            steps = [(link, *self._decisions[digest]) for _, link, digest in applied
                     if digest in self._decisions]
        return replay_links(steps, pseudonym)

    def close(self) -> None:
        for f in self._followers:
            f.close()
