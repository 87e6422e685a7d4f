"""A confidential MASH feed for the tests: the example policy with feed keys listed,
and the routing core built without Kafka, so a test can seal and open copies in
process. Used by the feed-encryption tests and the HPKE and Avro Java cross-checks.
No tests live here.
"""

from __future__ import annotations

from pathlib import Path

from broker.clock import FixedClock
from broker.policy import ConsentStore, Policy
from broker.routing.core import RoutingCore
from broker.signing.feedkeys import FeedKeyring
from broker.topics import Topics
from tests.helpers import CODEC

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
MASH = "torbay-mash"


def feed_key_entry(ring: FeedKeyring, index: int = -1, **window: str) -> str:
    """One ``feed_keys`` entry of the policy: a key of ``ring`` (and its window)."""
    key = ring.keys[index]
    lines = [f"id: {key.id}", f"kem: {key.kem}", f"public_key: {key.public().public_key_b64}"]
    lines += [f"{k}: '{v}'" for k, v in window.items()]
    return "      - " + "\n        ".join(lines) + "\n"


def policy_with_feed_keys(*entries: str) -> str:
    """The example policy's text with ``entries`` as the MASH's feed keys."""
    text = POLICY.read_text()
    marker = f"  - id: {MASH}\n"
    assert marker in text
    return text.replace(marker, marker + "    feed_keys:\n" + "".join(entries))


def confidential_policy(ring: FeedKeyring, index: int = -1) -> Policy:
    """The example policy, the MASH's feed sealed to ``ring``'s key at ``index``."""
    text = policy_with_feed_keys(feed_key_entry(ring, index))
    return Policy.from_text(text, field_classes=CODEC.data_classes())


def core_at(
    policy: Policy, t: Topics, now_ms: int, *, pseudonym_key: bytes = b"e" * 32
) -> RoutingCore:
    """The routing core on ``policy`` with a fixed clock: no Kafka, no audit writer."""
    return RoutingCore(
        codec=CODEC,
        decider=policy,
        consents=ConsentStore(),
        topics=t,
        clock=FixedClock(now_ms),
        pseudonym_key=pseudonym_key,
    )
