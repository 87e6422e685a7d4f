"""Confidential feeds end to end: the policy's feed keys, the router sealing
copies (HPKE, tests/test_feed_hpke.py), a real Kafka feed that FeedReader opens."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from broker.api import FeedItem, FeedReader, Publisher
from broker.kafka.admin import Admin
from broker.policy import Policy
from broker.routing.core import Inbound
from broker.signing.feedkeys import FeedKeyring
from broker.signing.feeds import (
    ENCRYPTED_FEED_RECORD,
    X25519,
    XWING,
    FeedDecryptionError,
    is_sealed,
)
from broker.topics import Topics
from tests.feed_helpers import MASH, core_at, policy_with_feed_keys
from tests.feed_helpers import feed_key_entry as entry
from tests.helpers import CODEC, create_topics, example, publish, read_all, run_router, settings_for


def keyring(*kems: str) -> FeedKeyring:
    ring = FeedKeyring(MASH)
    for kem in kems or (XWING,):
        ring.new_key(kem)
    return ring


def load(text: str) -> Policy:
    return Policy.from_text(text, field_classes=CODEC.data_classes())


def test_policy_lists_feed_keys_and_refuses_bad_ones() -> None:
    from broker.policy import PolicyError

    ring = keyring(X25519, XWING)
    policy = load(
        policy_with_feed_keys(
            entry(ring, 0, not_after="2027-01-01T00:00:00Z"),
            entry(ring, 1, not_before="2026-12-01T00:00:00Z"),
        )
    )
    keys = policy.subscriber(MASH).feed_keys
    assert [(k.id, k.kem) for k in keys] == [(ring.keys[0].id, X25519), (ring.keys[1].id, XWING)]
    assert keys[0].not_after_ms == 1_798_761_600_000 and keys[1].not_before_ms is not None
    assert policy.subscriber("torbay-csc").feed_keys == ()
    bad = [
        (entry(ring).replace("kem: MLKEM768-X25519", "kem: RSA"), "kem 'RSA' is not one of"),
        (entry(ring).replace(ring.keys[1].id, "0011223344556677"), "is not this key's id"),
        (entry(ring).replace("kem: MLKEM768-X25519", "kem: DHKEM-X25519"), "is 32 bytes, this"),
        (entry(ring, not_after="2027-01-01"), "leave the newest key open-ended"),
        (entry(ring) + entry(ring), "is listed twice"),
        (entry(ring, not_before="soon"), "not_before: not an ISO-8601 time"),
        (
            entry(ring, not_before="2027-01-02T00:00:00Z", not_after="2027-01-01T00:00:00Z")
            + entry(ring, 0),
            "not_after must be later than not_before",
        ),
    ]
    for text, message in bad:
        with pytest.raises(PolicyError, match=message):
            load(policy_with_feed_keys(text))


def test_router_seals_only_a_confidential_subscribers_copies_to_its_current_key() -> None:
    ring = keyring(X25519, XWING)
    switch = "2026-12-01T00:00:00Z"
    policy = load(
        policy_with_feed_keys(
            entry(ring, 0, not_after="2027-01-01T00:00:00Z"), entry(ring, 1, not_before=switch)
        )
    )
    t = Topics("enc")
    switch_ms = 1_796_083_200_000
    for now, used in ((switch_ms - 1, ring.keys[0]), (switch_ms + 1, ring.keys[1])):
        source = example("missing_episode")
        event = CODEC.encode(CODEC.from_json(source))
        routed = core_at(policy, t, now).handle(
            Inbound(t.ingest("devon-cornwall-police"), 0, 0, None, event)
        )
        by_topic = {o.topic: o.value for o in routed.outputs}
        sealed = by_topic[t.feed(MASH)]
        assert is_sealed(CODEC, sealed) and b"Jamie" not in sealed
        outer = CODEC.decode(sealed, ENCRYPTED_FEED_RECORD)
        assert (outer["key_id"], outer["event_id"]) == (used.id, source["event_id"])
        record = ring.opener().open_feed_record(CODEC, sealed)
        assert record["decision"]["subscriber"] == MASH
        assert record["event"]["event_id"] == source["event_id"]
        plain = by_topic[t.feed("torbay-csc")]
        assert not is_sealed(CODEC, plain)
        assert (
            CODEC.decode(plain, "safeshare.FeedRecord")["event"]["event_id"] == source["event_id"]
        )
        # The audit leaf's digest is of the bytes actually delivered (the sealed message).
        leaf = next(lf for lf in map(json.loads, routed.leaves) if lf["recipient"] == MASH)
        assert leaf["delivered_digest"] == hashlib.sha256(sealed).hexdigest()


@pytest.mark.kafka
def test_feed_reader_opens_a_real_feed_with_the_keyring_and_refuses_without(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    ring = keyring(XWING)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_with_feed_keys(entry(ring)))
    s = replace(settings_for(topics, tmp_path), policy_path=policy_file)
    create_topics(admin, s)
    event = example("missing_episode")
    publish(kafka_bootstrap, topics, "devon-cornwall-police", event)
    run_router(kafka_bootstrap, s)
    raw = read_all(kafka_bootstrap, topics.feed(MASH))
    assert len(raw) == 1 and is_sealed(CODEC, raw[0].value or b"")
    assert CODEC.decode(raw[0].value or b"", ENCRYPTED_FEED_RECORD)["key_id"] == ring.keys[0].id
    assert b"Jamie" not in (raw[0].value or b"")
    with (
        FeedReader(
            bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics, group_id="no-key"
        ) as reader,
        pytest.raises(FeedDecryptionError, match="encrypted: pass the subscriber's"),
    ):
        for _ in range(100):
            reader.poll(timeout_ms=300)
    stranger = keyring(XWING)  # a keyring of the right subscriber, but not its key
    with (
        FeedReader(
            bootstrap=kafka_bootstrap,
            subscriber=MASH,
            topics=topics,
            group_id="wrong-key",
            keyring=stranger,
        ) as reader,
        pytest.raises(FeedDecryptionError, match=f"no feed key with id {ring.keys[0].id}"),
    ):
        for _ in range(100):
            reader.poll(timeout_ms=300)
    with FeedReader(
        bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics, group_id="key", keyring=ring
    ) as reader:
        items: list[FeedItem] = []
        for _ in range(100):
            items += reader.poll(timeout_ms=300)
            if items:
                break
    assert [i.record["event"]["event_id"] for i in items] == [event["event_id"]]
    assert items[0].sealed_with == ring.keys[0].id
    # the pseudonym is inside the sealed copy; the Kafka record key is an opaque digest
    pseudonym = event["subject"]["pseudonym"]
    assert items[0].record["event"]["subject"]["pseudonym"] == pseudonym
    assert items[0].key and pseudonym not in items[0].key
    assert pseudonym.encode() not in (raw[0].value or b"")
    plain = read_all(kafka_bootstrap, topics.feed("torbay-csc"))
    assert [r.key for r in plain] == [pseudonym.encode()]  # a plain feed keys by it


@pytest.mark.kafka
def test_cli_new_feed_key_rotation_and_tail(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    """`keys new-feed` twice (a rotation): the record sealed to the first key and
    the one sealed to the second both show in `feed tail`, opened by the keyring."""
    from tests.helpers import safeshare

    env = {
        "SAFESHARE_BOOTSTRAP": kafka_bootstrap,
        "SAFESHARE_NAMESPACE": topics.namespace,
        "SAFESHARE_HOME": str(tmp_path),
    }
    policy_file = tmp_path / "policy.yaml"
    s = replace(settings_for(topics, tmp_path), policy_path=policy_file)
    entries: list[str] = []
    events = []
    for kem in ("DHKEM-X25519", None):
        args = ["keys", "new-feed", "--subscriber", MASH] + (["--kem", kem] if kem else [])
        out = safeshare(*args, env=env)
        assert out.returncode == 0, out.stderr
        printed = [ln for ln in out.stdout.splitlines() if not ln.startswith("#")]
        assert printed[1].startswith("  kem: " + (kem or XWING))
        if entries:  # retire the previous key as the new one comes in
            entries[-1] += "        not_after: '2000-01-01T00:00:00Z'\n"
        entries.append("".join(f"      {ln}\n" for ln in printed))
        policy_file.write_text(policy_with_feed_keys(*entries))
        if not events:
            create_topics(admin, s)
        events.append(example("missing_episode"))
        with Publisher(
            bootstrap=kafka_bootstrap, agency="devon-cornwall-police", topics=topics
        ) as p:
            p.publish_json(events[-1])
        run_router(kafka_bootstrap, s)
    ring = FeedKeyring.load(tmp_path / "keys" / "subscribers" / f"{MASH}.json")
    assert [k.kem for k in ring.keys] == [X25519, XWING]
    raw = read_all(kafka_bootstrap, topics.feed(MASH))
    used = [CODEC.decode(r.value or b"", ENCRYPTED_FEED_RECORD)["key_id"] for r in raw]
    assert used == [k.id for k in ring.keys]
    out = safeshare("feed", "tail", "--subscriber", MASH, "--idle", "2", env=env)
    assert out.returncode == 0, out.stderr
    shown = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["event"]["event_id"] for x in shown] == [e["event_id"] for e in events]
    assert [x["sealed_with"] for x in shown] == [k.id for k in ring.keys]
    out = safeshare("keys", "new-feed", "--subscriber", MASH, "--not-before", "soon", env=env)
    assert out.returncode == 2 and "'soon' is not an ISO-8601 time" in out.stderr
    (tmp_path / "keys" / "subscribers" / f"{MASH}.json").write_text("{}")
    out = safeshare("feed", "tail", "--subscriber", MASH, "--idle", "2", env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "not a feed keyring" in out.stderr


def test_the_largest_event_publish_accepts_reaches_a_confidential_subscriber() -> None:
    """Sealing adds ~1.2 KB (X-Wing's enc); an event at the one size limit still
    fits the copy's own limit, so no event is "published" that a sealed feed drops."""
    from broker.codec.limits import MAX_EVENT_BYTES

    ring = keyring(XWING)
    policy = load(policy_with_feed_keys(entry(ring)))
    t = Topics("big")
    source = example("missing_episode")
    for _ in range(4):  # grow the summary until the event is at the limit
        gap = MAX_EVENT_BYTES - len(CODEC.encode(CODEC.from_json(source)))
        summary = source["summary"]
        source["summary"] = summary + "x" * gap if gap >= 0 else summary[:gap]
    event = CODEC.encode(CODEC.from_json(source))
    assert MAX_EVENT_BYTES - 8 <= len(event) <= MAX_EVENT_BYTES
    routed = core_at(policy, t, 1_795_000_000_000).handle(
        Inbound(t.ingest("devon-cornwall-police"), 0, 0, None, event)
    )
    assert routed.quarantined is None
    sealed = {o.topic: o.value for o in routed.outputs}[t.feed(MASH)]
    assert len(sealed) > len(event)
    record = ring.opener().open_feed_record(CODEC, sealed)
    assert record["event"]["summary"] == source["summary"]
