"""Confidential feeds: copies encrypted to the subscriber's X25519 key."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.api import FeedReader, Publisher
from broker.clock import FixedClock
from broker.kafka.admin import Admin
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, RoutingCore
from broker.signing.feeds import FeedDecryptionError, decrypt, encrypt_for, is_encrypted, new_key
from broker.topics import Topics
from tests.routing_helpers import CODEC, create_topics, example, read_all, run_router, settings_for

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
MASH = "torbay-mash"


def policy_with_feed_key(public: str) -> str:
    text = POLICY.read_text()
    marker = f"  - id: {MASH}\n"
    assert marker in text
    return text.replace(marker, marker + f"    encryption_key: {public}\n")


def test_round_trip_and_what_must_not_decrypt() -> None:
    key, public = new_key()
    sealed = encrypt_for(public, MASH, b"feed record bytes")
    assert is_encrypted(sealed) and b"feed record" not in sealed
    assert decrypt(key, MASH, sealed) == b"feed record bytes"
    with pytest.raises(FeedDecryptionError):
        decrypt(key, "devon-mash", sealed)  # moved to another subscriber's feed
    other, _ = new_key()
    with pytest.raises(FeedDecryptionError):
        decrypt(other, MASH, sealed)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(FeedDecryptionError):
        decrypt(key, MASH, bytes(tampered))
    assert encrypt_for(public, MASH, b"x") != encrypt_for(public, MASH, b"x")  # fresh each time


def test_policy_refuses_a_malformed_encryption_key() -> None:
    from broker.policy import PolicyError

    with pytest.raises(PolicyError, match="X25519"):
        Policy.from_text(policy_with_feed_key("bm90LWEta2V5"), field_classes=CODEC.data_classes())


def test_router_encrypts_only_the_copies_of_a_subscriber_with_a_key() -> None:
    key, public = new_key()
    policy = Policy.from_text(policy_with_feed_key(public), field_classes=CODEC.data_classes())
    t = Topics("enc")
    core = RoutingCore(
        codec=CODEC,
        decider=policy,
        consents=ConsentStore(),
        topics=t,
        clock=FixedClock(1_795_000_000_000),
        pseudonym_key=b"e" * 32,
    )
    event = CODEC.encode(CODEC.from_json(example("missing_episode")))
    routed = core.handle(Inbound(t.ingest("devon-cornwall-police"), 0, 0, None, event))
    by_topic = {o.topic: o.value for o in routed.outputs}
    sealed = by_topic[t.feed(MASH)]
    assert is_encrypted(sealed) and b"Jamie" not in sealed
    record = CODEC.decode(decrypt(key, MASH, sealed), "safeshare.FeedRecord")
    assert record["decision"]["subscriber"] == MASH
    assert not is_encrypted(by_topic[t.feed("torbay-csc")])
    # The audit leaf's digest is of the bytes actually delivered (the ciphertext).
    import hashlib

    leaf = next(lf for lf in routed.leaves if lf["recipient"] == MASH)
    assert leaf["delivered_digest"] == hashlib.sha256(sealed).hexdigest()


@pytest.mark.kafka
def test_feed_reader_decrypts_with_the_key_and_refuses_without(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    key, public = new_key()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_with_feed_key(public))
    from dataclasses import replace

    s = replace(settings_for(topics, tmp_path), policy_path=policy_file)
    create_topics(admin, s)
    event = example("missing_episode")
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police", topics=topics) as p:
        p.publish_json(event)
    run_router(kafka_bootstrap, s)
    raw = read_all(kafka_bootstrap, topics.feed(MASH))
    assert len(raw) == 1 and is_encrypted(raw[0].value or b"")
    with FeedReader(
        bootstrap=kafka_bootstrap,
        subscriber=MASH,
        topics=topics,
        group_id="no-key",
        decryption_key=None,
    ) as reader, pytest.raises(FeedDecryptionError, match="encrypted"):
        for _ in range(100):
            reader.poll(timeout_ms=300)
    with FeedReader(
        bootstrap=kafka_bootstrap,
        subscriber=MASH,
        topics=topics,
        group_id="with-key",
        decryption_key=key,
    ) as reader:
        items: list = []
        for _ in range(100):
            items += reader.poll(timeout_ms=300)
            if items:
                break
    assert [i.record["event"]["event_id"] for i in items] == [event["event_id"]]
