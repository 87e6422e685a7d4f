"""Which topics the router reads: the ones its policy names, not a regex.

A regex subscription makes kafka-python ask for the metadata of every topic in
the cluster at each refresh (``metadata_max_age_ms``, 5 s here so that a new
topic is read soon) and decode it in Python: on a cluster of 4,000 topics that
is a stall of a few hundred ms in which the router routes nothing, every 5 s,
and it was the latency tail at a steady rate (docs/PERFORMANCE.md). So the
router subscribes by name to the topics its policy implies: each agency's
ingest and consent topic, each subscriber's identity decisions topic. Their
metadata is a few topics; one the policy names but nobody has created yet is
read from the refresh after it appears. Any other topic that matches the
router's pattern on the cluster at start (an agency the policy does not name)
is subscribed too, so its records are still routed to their end (withheld
from everyone as UNKNOWN_AGENCY, or quarantined) and audited, and is named in
the log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from broker.kafka.consumer import Consumer
from broker.kafka.exceptions import translated
from broker.topics import Topics

log = logging.getLogger(__name__)


def source_pattern(topics: Topics) -> str:
    """Every topic the router could be asked to read: ingest, consent and identity decisions."""
    prefixes = (topics.ingest_prefix, topics.consent_prefix, topics.identity_decisions_prefix)
    return "^(" + "|".join(re.escape(p) for p in prefixes) + r")[a-z0-9][a-z0-9_-]*$"


def policy_topics(
    topics: Topics, agencies: Iterable[str], subscribers: Iterable[str]
) -> list[str]:
    """The topics a policy's agencies and subscribers write for the router."""
    names = [t for a in agencies for t in (topics.ingest(a), topics.consent(a))]
    names += [topics.identity_decisions(s) for s in subscribers]
    return sorted(set(names))


@dataclass(frozen=True)
class Sources:
    """What the router subscribed to, and what it noticed doing so."""

    topics: tuple[str, ...]
    missing: tuple[str, ...]
    """Named by the policy, not on the cluster yet (read once created)."""
    unnamed: tuple[str, ...]
    """On the cluster, matching the pattern, named by no policy entry (read; nothing shared)."""


def subscribe_sources(
    consumer: Consumer, topics: Topics, named: Iterable[str], *, who: str
) -> Sources:
    """Subscribe ``consumer`` to ``named`` and to any other matching topic already
    on the cluster (one listing of every topic, at start only); log what is
    missing or unnamed, one line each."""
    pattern = re.compile(source_pattern(topics))
    with translated("list topics"):
        existing = set(consumer.raw.topics())
    named = set(named)
    unnamed = sorted(t for t in existing - named if pattern.match(t))
    missing = sorted(named - existing)
    chosen = sorted(named | set(unnamed))
    consumer.subscribe(chosen)
    if missing:
        log.warning(
            "router %s: %d topic(s) the policy names do not exist yet, read once "
            "created: %s", who, len(missing), ", ".join(missing),
        )
    if unnamed:
        log.warning(
            "router %s: %d topic(s) belong to no agency or subscriber of the policy; "
            "nothing from them is shared: %s", who, len(unnamed), ", ".join(unnamed),
        )
    return Sources(tuple(chosen), tuple(missing), tuple(unnamed))
