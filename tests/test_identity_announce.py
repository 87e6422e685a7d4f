"""Link and unlink told to the subscribers' feeds, on a real Kafka (issue 13).

The police name a child by NHS number; the return-home service sends the same
child with a keying error, so the router routes it under a provisional
pseudonym and the MASH links the two. Each feed that received records under
the provisional pseudonym gets one IdentityNotice, keyed as its records of that
child are, in the decision's transaction: a router that dies with the decision
written but not committed, replaced by its next incarnation, does not make a
second one. A feed that holds nothing under it gets nothing. The unlink is told
to those told of the link and to those that received records under the merged
child since. The MASH's feed is confidential: its notices arrive sealed (HPKE)
and its keyring opens them.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.api import FeedReader, IdentityDesk
from broker.audit.leaf import AuditLeaf, LeafKind
from broker.clock import SystemClock
from broker.identity.pseudonym import PartnershipKeys
from broker.kafka.admin import Admin
from broker.kafka.consumer import make_consumer
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
from broker.routing.identity_notices import notice_id
from broker.signing.feedkeys import FeedKeyring
from broker.signing.feeds import ENCRYPTED_FEED_RECORD, feed_schema, is_sealed
from broker.topics import Topics
from tests.helpers import (
    CODEC,
    create_topics,
    publish,
    read_all,
    read_leaves,
    safeshare,
    settings_for,
    wait_for,
)
from tests.test_feed_encryption import entry, keyring, policy_with_feed_keys
from tests.test_router_identity import NHS, _police
from tests.test_router_identity_decisions import WORKER, _hmac, _jim

pytestmark = pytest.mark.kafka

MASH = "torbay-mash"
NOTICE = "safeshare.IdentityNotice"


class _Router:
    """A router in a thread, with the instance id given (a restart takes it over)."""

    def __init__(self, bootstrap: str, s: Any, instance_id: str) -> None:
        self.routed: list[Routed] = []
        self._taken = 0
        clock = SystemClock()
        self.service = build_service(
            s, bootstrap, clock=clock, instance_id=instance_id,
            core=build_core(s, clock=clock, codec=CODEC), on_batch=self.routed.extend,
        )  # fmt: skip
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:
            self.failure = exc

    def identities(self) -> list[str | None]:
        """How the router named what it routed next (waits for at least one)."""
        seen = self._taken
        wait_for("the router to route what was published",
                 lambda: len(self.routed) > seen or not self.thread.is_alive(), timeout_s=180)
        assert self.failure is None, f"the router stopped: {self.failure!r}"
        self._taken = len(self.routed)
        return [r.identity for r in self.routed[seen:]]

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(timeout=60)


def _dies_before_committing_a_link(router: _Router) -> tuple[threading.Event, threading.Event]:
    """Make ``router`` stop dead with a LINK's transaction written (its records on
    the broker) but not committed, as a process killed at that moment would; the
    first event says it is there, setting the second lets the zombie go on (its
    commit is then refused: its successor fenced it)."""
    service = router.service
    finish = service._finish
    stuck, release = threading.Event(), threading.Event()

    def finish_or_hang(txn: Any) -> None:
        if any(r.identity == "LINKED" for r in txn.routed):
            assert service._producer is not None
            service._producer.flush(timeout=60)
            stuck.set()
            release.wait(600)
        finish(txn)

    service._finish = finish_or_hang  # type: ignore[method-assign]
    return stuck, release


def _feed(
    bootstrap: str, topics: Topics, subscriber: str, ring: FeedKeyring | None
) -> list[tuple[bytes | None, str, dict[str, Any], bytes]]:
    """Every committed record of a feed: (key, schema, record, bytes), opened if sealed."""
    out = []
    for r in read_all(bootstrap, topics.feed(subscriber)):
        value = r.value or b""
        if is_sealed(CODEC, value):
            assert ring is not None, f"{subscriber}'s feed is sealed"
            outer, record, schema = ring.opener().open_typed(CODEC, value)
            assert outer["event_id"] == record.get("notice_id", outer["event_id"])
        else:
            schema = feed_schema(CODEC, value)
            record = CODEC.decode(value, schema)
        out.append((r.key, schema, record, value))
    return out


def _notices(feed: list[tuple[bytes | None, str, dict[str, Any], bytes]]) -> list[Any]:
    return [(k, rec, raw) for k, schema, rec, raw in feed if schema == NOTICE]


def _holders(leaves: list[AuditLeaf], subject: str) -> dict[str, set[str]]:
    """subscriber -> event ids shared with it under the keyed subject ``subject``."""
    out: dict[str, set[str]] = {}
    for lf in leaves:
        if lf.kind is LeafKind.SHARED and lf.subject == subject:
            out.setdefault(str(lf.recipient), set()).add(lf.event_id)
    return out


def _uncommitted(bootstrap: str, topic: str) -> list[bytes]:
    """What a feed holds read_uncommitted: aborted transactions' records too."""
    consumer = make_consumer(bootstrap, group_id=None, topics=[topic],
                             isolation_level="read_uncommitted")
    try:
        return [r.value or b"" for r in consumer.collect(1_000_000, timeout_s=3.0)]
    finally:
        consumer.close()


def _drain(reader: FeedReader) -> list[Any]:
    """Every item of a feed, through the public API (until two empty polls)."""
    items: list[Any] = []
    quiet = 0
    while quiet < 2:
        got = reader.poll(timeout_ms=1500)
        items += got
        quiet = 0 if got or not items else quiet + 1
    return items


def _sealed_ids(bootstrap: str, topics: Topics) -> list[str]:
    """The ids the MASH's sealed records name, aborted ones too."""
    return [CODEC.decode(v, ENCRYPTED_FEED_RECORD)["event_id"]
            for v in _uncommitted(bootstrap, topics.feed(MASH))]


@pytest.fixture
def home(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> Iterator[tuple[Any, FeedKeyring, list[str]]]:
    ring = keyring()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_with_feed_keys(entry(ring)))
    s = replace(settings_for(topics, tmp_path), policy_path=policy_file)
    policy = create_topics(admin, s)
    yield s, ring, [x.id for x in policy.subscribers]


@pytest.mark.timeout(900)  # two router incarnations, a fencing and six routed steps
def test_link_and_unlink_are_told_once_to_the_feeds_holding_the_child_and_to_no_other(
    kafka_bootstrap: str, topics: Topics, home: tuple[Any, FeedKeyring, list[str]],
    tmp_path: Path,
) -> None:
    s, ring, subscribers = home
    instance = f"announce-{uuid.uuid4().hex[:6]}"
    first = _Router(kafka_bootstrap, s, instance)
    second: _Router | None = None
    stuck, release = _dies_before_committing_a_link(first)
    try:
        publish(kafka_bootstrap, topics, "devon-cornwall-police", _police())
        assert first.identities() == ["NEW"]
        publish(kafka_bootstrap, topics, "safe-return-charity", _jim())
        assert first.identities() == ["REVIEW"]
        child = PartnershipKeys.load(s.partnership_keys_dir).of_nhs_number(NHS)
        with IdentityDesk(bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics) as desk:
            [item] = desk.reviews()
            provisional = item["provisional"]
            assert item["candidate"] == child
            leaves = read_leaves(kafka_bootstrap, topics)
            holders = _holders(leaves, _hmac(s, provisional))
            only_child = set(_holders(leaves, _hmac(s, child))) - set(holders)
            # The scene has all three kinds of feed: holding the provisional child's
            # records (the MASH, sealed, among them), only the other child's, none.
            assert MASH in holders and only_child
            assert set(subscribers) - set(holders) - only_child

            link_id = desk.link(child, provisional, decided_by=WORKER,
                                review_id=item["review_id"])
            wait_for("the router to die holding the link's transaction open",
                     stuck.is_set, timeout_s=180)
            # Its notices are on the broker, in a transaction that never commits.
            sealed_for = notice_id(link_id, MASH)
            assert _sealed_ids(kafka_bootstrap, topics).count(sealed_for) == 1
            # The next incarnation fences it and routes the decision again.
            second = _Router(kafka_bootstrap, s, instance)
            assert second.identities() == ["LINKED"]
            release.set()
            first.thread.join(timeout=120)
            assert first.service.stats.fenced
            # Written twice (the aborted one and the committed one), read once.
            assert _sealed_ids(kafka_bootstrap, topics).count(sealed_for) == 2

            feeds = {x: _feed(kafka_bootstrap, topics, x, ring if x == MASH else None)
                     for x in subscribers}
            for x in subscribers:
                told = _notices(feeds[x])
                if x not in holders:
                    assert told == [], f"{x} holds nothing under {provisional} but was told"
                    continue
                [(key, notice, raw)] = told  # once, though the decision was routed twice
                assert (notice["action"], notice["decision_id"], notice["subscriber"]) == (
                    "LINK", link_id, x)
                assert (notice["pseudonym"], notice["other_pseudonym"]) == (child, provisional)
                # Keyed as the feed's records of the provisional child: it sorts with them.
                keys = {k for k, schema, rec, _ in feeds[x] if schema != NOTICE
                        and rec["event"]["event_id"] in holders[x]}
                assert keys == {key} and notice["other_record_key"].encode() == key
                assert WORKER.encode() not in raw and b"James" not in raw
                if x == MASH:  # a confidential feed: sealed like its copies
                    assert is_sealed(CODEC, raw) and provisional.encode() not in raw
                    assert key != provisional.encode()  # the key of a sealed feed is opaque
                else:
                    assert not is_sealed(CODEC, raw)

            # The next such event follows the linked child, to whoever it goes.
            after = _jim()
            publish(kafka_bootstrap, topics, "safe-return-charity", after)
            assert second.identities() == ["LINK"]
            since = {lf.recipient for lf in read_leaves(kafka_bootstrap, topics)
                     if lf.kind is LeafKind.SHARED and lf.event_id == after["event_id"]}
            assert since

            unlink_id = desk.unlink(child, provisional, decided_by=WORKER)
            assert second.identities() == ["UNLINKED"]
        for x in subscribers:
            unlinks = [(k, n) for k, n, _ in _notices(
                _feed(kafka_bootstrap, topics, x, ring if x == MASH else None))
                if n["action"] == "UNLINK"]
            if x not in set(holders) | since:
                assert unlinks == [], f"{x} was told of an unlink it has no records for"
                continue
            [(key, notice)] = unlinks
            assert notice["decision_id"] == unlink_id
            assert notice["other_record_key"].encode() == key

        # The Python API and the CLI say what these records are, sealed or not.
        with FeedReader(bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics,
                        keyring=ring, group_id=f"announce-{uuid.uuid4().hex[:6]}") as reader:
            items = _drain(reader)
        assert [(i.record["action"], i.sealed_with == ring.keys[0].id)
                for i in items if i.is_identity_notice] == [("LINK", True), ("UNLINK", True)]
        assert all("event" in i.record for i in items if not i.is_identity_notice)
        ring.save(tmp_path / "ring.json")
        env = {"SAFESHARE_BOOTSTRAP": kafka_bootstrap, "SAFESHARE_NAMESPACE": topics.namespace,
               "SAFESHARE_HOME": str(tmp_path)}
        for x, keys in ((MASH, ["--keyring", str(tmp_path / "ring.json")]),
                        ("dc-police-exploitation", [])):
            assert x in holders
            out = safeshare("feed", "tail", "--subscriber", x, "--idle", "3", *keys, env=env)
            assert out.returncode == 0, out.stderr
            lines = [json.loads(line) for line in out.stdout.splitlines()]
            told = [ln["identity_notice"] for ln in lines if "identity_notice" in ln]
            assert [(n["action"], n["other_pseudonym"]) for n in told] == [
                ("LINK", provisional), ("UNLINK", provisional)]
            assert len(lines) - len(told) == len(
                [lf for lf in read_leaves(kafka_bootstrap, topics)
                 if lf.kind is LeafKind.SHARED and lf.recipient == x])
    finally:
        release.set()
        for r in (first, second):
            if r is not None:
                r.stop()
