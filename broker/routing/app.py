"""Assembling a router from configuration: codec, policy, consent store, keys, Kafka.

Fail closed: a schema directory or policy that does not load, or a key that
cannot be read or created, stops the router before it consumes anything.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from broker.audit.leaf import audit_encoder
from broker.clock import Clock
from broker.codec import Codec
from broker.config import Settings
from broker.identity.exceptions import IdentityError
from broker.keyfiles import SUBJECT_KEY_FILE, load_or_create_secret
from broker.loop.starter import ClockStarter
from broker.policy import ConsentStore, Policy
from broker.routing.core import RoutingCore
from broker.routing.exceptions import RoutingError
from broker.routing.identity import SubjectIdentity
from broker.routing.service import RouterService
from broker.routing.sources import policy_topics

log = logging.getLogger(__name__)

def settle_memory() -> None:
    """Garbage-collector settings for a process whose main job is routing.

    Call once the router is built. What exists by then (schemas, policy,
    compiled writers, Kafka clients) lives as long as the process, so it is
    moved out of the collector's sight (``gc.freeze``); and the youngest
    generation is collected every 10,000 allocations instead of 700, as a
    batch allocates hundreds of thousands of short-lived containers, nearly all
    freed by reference counting alone (with the defaults, gen2 passes over
    everything built at start took a visible share of routing time:
    docs/PERFORMANCE.md). Reference cycles are still collected, in larger steps.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def build_core(
    settings: Settings,
    *,
    clock: Clock,
    codec: Codec | None = None,
    policy: Policy | None = None,
) -> RoutingCore:
    codec = codec or Codec.from_dir(settings.schemas_dir)
    policy = policy or Policy.load(settings.policy_file(), field_classes=codec.data_classes())
    try:  # created on first use, like the subject key; unreadable: no router
        identity = SubjectIdentity.from_keys_dir(
            settings.partnership_keys_dir, policy.linkage_thresholds, create=True
        )
    except IdentityError as exc:
        raise RoutingError(str(exc)) from exc
    return RoutingCore(
        identity=identity,
        codec=codec,
        decider=policy,
        clock_starter=ClockStarter(policy=policy, codec=codec, topics=settings.topics).starts,
        consents=ConsentStore(),
        topics=settings.topics,
        clock=clock,
        pseudonym_key=load_or_create_secret(settings.keys_dir / SUBJECT_KEY_FILE),
        time_bounds=settings.time_bounds,
    )


def build_service(
    settings: Settings,
    bootstrap: str,
    *,
    clock: Clock,
    instance_id: str,
    core: RoutingCore | None = None,
    **kwargs: Any,
) -> RouterService:
    """The router service; it reads the topics its policy names (broker/routing/sources.py)."""
    core = core or build_core(settings, clock=clock)
    if isinstance(core.decider, Policy) and "source_topics" not in kwargs:
        kwargs["source_topics"] = policy_topics(
            settings.topics,
            (a.id for a in core.decider.agencies),
            (s.id for s in core.decider.subscribers),
        )
    kwargs.setdefault("max_batch", settings.router_max_batch)
    return RouterService(
        bootstrap=bootstrap,
        core=core,
        topics=settings.topics,
        instance_id=instance_id,
        audit_encoder=audit_encoder,
        **kwargs,
    )
