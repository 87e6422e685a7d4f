"""Review, link and unlink on a real Kafka (issue 13): a person in the MASH decides.

The police name a child by NHS number; the return-home service sends the
same names with a birth date a day later (a keying error, or another child),
so the router cannot be sure: the event goes under a provisional pseudonym and a review item reaches
the MASH's review topic. A MASH worker links the two; the next such event
follows the linked child; an unlink gives the provisional child back and its
audit leaf lists what had been shared under the merged one. A school's DSL
cannot link (quarantined, audited).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.api import IdentityDesk
from broker.audit.leaf import LeafKind, subject_pseudonym
from broker.clock import SystemClock
from broker.identity.pseudonym import PartnershipKeys
from broker.kafka.admin import Admin
from broker.keyfiles import SUBJECT_KEY_FILE, load_or_create_secret
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
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
from tests.test_router_identity import NHS, _event, _mash, _police

pytestmark = pytest.mark.kafka

MASH = "torbay-mash"
WORKER = "Alex Worker"


class _Router:
    """One router process for the whole test, in a thread: each step waits for the
    messages it published to be routed (one group join, not one per step)."""

    def __init__(self, bootstrap: str, s: Any) -> None:
        self.routed: list[Routed] = []
        self._taken = 0
        clock = SystemClock()
        self.service = build_service(
            s, bootstrap, clock=clock, instance_id=f"test-{uuid.uuid4().hex[:6]}",
            core=build_core(s, clock=clock, codec=CODEC), on_batch=self.routed.extend,
        )  # fmt: skip
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # shown by next(), not lost with the thread
            self.failure = exc
            raise

    def next(self) -> list[Routed]:
        """What the router routed since the last call (waits for at least one)."""
        seen = self._taken
        wait_for("the router to route what was published",
                 lambda: len(self.routed) > seen or not self.thread.is_alive(), timeout_s=180)
        assert self.failure is None, f"the router stopped: {self.failure!r}"
        self._taken = len(self.routed)
        return self.routed[seen:]

    def identities(self) -> list[str | None]:
        """How the router named what it routed next (see :meth:`next`)."""
        return [r.identity for r in self.next()]

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(timeout=60)


@pytest.fixture
def routing(kafka_bootstrap: str, topics: Topics, admin: Admin,
            tmp_path: Path) -> Iterator[tuple[Any, _Router]]:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    r = _Router(kafka_bootstrap, s)
    try:
        yield s, r
    finally:
        r.stop()


def _jim() -> dict[str, Any]:
    """The return-home service's record: Jim Exmaple, born a day after the police's
    James Example (a familiar form, a typo and a birth date a day off: p 0.75, the
    review band)."""
    return _event(
        "return_home_interview", given_name="Jim", family_name="Exmaple",
        date_of_birth="2010-03-15",
    )  # fmt: skip


def _under(bootstrap: str, topics: Topics, event_id: str) -> str:
    """The pseudonym the MASH received an event under."""
    return str(_mash(bootstrap, topics)[event_id][1]["event"]["subject"]["pseudonym"])


def _hmac(s: Any, pseudonym: str) -> str:
    """The audit log's keyed subject pseudonym (the router's key in its home)."""
    key = load_or_create_secret(s.keys_dir / SUBJECT_KEY_FILE)
    return subject_pseudonym(key, pseudonym)


def _start(
    bootstrap: str, topics: Topics, s: Any, router: _Router
) -> tuple[str, str, dict[str, Any]]:
    """Police then the return-home service: (NHS child, provisional child, review item)."""
    publish(bootstrap, topics, "devon-cornwall-police", _police())
    assert router.identities() == ["NEW"]
    jim = _jim()
    publish(bootstrap, topics, "safe-return-charity", jim)
    assert router.identities() == ["REVIEW"]
    child = PartnershipKeys.load(s.partnership_keys_dir).of_nhs_number(NHS)
    provisional = _under(bootstrap, topics, jim["event_id"])
    assert provisional != child
    with IdentityDesk(bootstrap=bootstrap, subscriber=MASH, topics=topics) as desk:
        [item] = desk.reviews()
    assert (item["provisional"], item["candidate"], item["event_id"]) == (
        provisional, child, jim["event_id"])
    assert 0.5 <= item["match_probability"] < 0.995
    return child, provisional, item


@pytest.mark.timeout(600)  # eight routed steps and a restart: minutes at load 12 on 2 cores
def test_the_mash_links_a_review_the_next_event_follows_and_an_unlink_says_what_was_shared(
    kafka_bootstrap: str, topics: Topics, routing: tuple[Any, _Router]
) -> None:
    s, router = routing
    child, provisional, item = _start(kafka_bootstrap, topics, s, router)
    # Only the deciders get review items.
    assert read_all(kafka_bootstrap, topics.identity_reviews("example-academy-dsl")) == []

    with IdentityDesk(bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics) as desk:
        link_id = desk.link(child, provisional, decided_by=WORKER, review_id=item["review_id"])
        assert router.identities() == ["LINKED"]
        assert desk.reviews() == []  # answered
        assert [d["decision_id"] for d in desk.show(provisional)["decisions"]] == [link_id]

    # The next such event is the linked child's, without anyone deciding again.
    after = _jim()
    publish(kafka_bootstrap, topics, "safe-return-charity", after)
    assert router.identities() == ["LINK"]
    assert _under(kafka_bootstrap, topics, after["event_id"]) == child

    with IdentityDesk(bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics) as desk:
        unlink_id = desk.unlink(child, provisional, decided_by=WORKER)
    assert router.identities() == ["UNLINKED"]

    leaves = read_leaves(kafka_bootstrap, topics)
    linked = [lf for lf in leaves if lf.kind is LeafKind.LINKED]
    unlinked = [lf for lf in leaves if lf.kind is LeafKind.UNLINKED]
    assert [lf.event_id for lf in linked] == [link_id]
    assert [lf.event_id for lf in unlinked] == [unlink_id]
    for lf in linked + unlinked:
        assert lf.source_agency == MASH
        assert lf.subject == _hmac(s, child)
        assert lf.identity_other == _hmac(s, provisional)
        text = lf.to_bytes()
        for clear in (WORKER.encode(), b"James", b"Jim", b"Example", b"Exmaple", b"2010-03-15",
                      child.encode(), provisional.encode()):
            assert clear not in text
    assert linked[0].identity_shares == ()
    # What went out under the merged child since the link: the MASH got the event.
    shared = {s_.recipient for s_ in leaves
              if s_.kind is LeafKind.SHARED and s_.event_id == after["event_id"]}
    assert MASH in shared
    assert set(unlinked[0].identity_shares or ()) == {f"{after['event_id']} {r}" for r in shared}

    # Split again: the record is the provisional child's once more.
    again = _jim()
    publish(kafka_bootstrap, topics, "safe-return-charity", again)
    assert router.identities() == ["LINK"]
    assert _under(kafka_bootstrap, topics, again["event_id"]) == provisional

    # A router started afresh rebuilds the same from the identity topic.
    router.stop()
    fresh = _Router(kafka_bootstrap, s)
    try:
        later, nhs = _jim(), _police()
        publish(kafka_bootstrap, topics, "safe-return-charity", later)
        assert fresh.identities() == ["LINK"]
        publish(kafka_bootstrap, topics, "devon-cornwall-police", nhs)
        assert fresh.identities() == ["LINK"]
    finally:
        fresh.stop()
    assert _under(kafka_bootstrap, topics, later["event_id"]) == provisional
    assert _under(kafka_bootstrap, topics, nhs["event_id"]) == child


def test_a_school_cannot_link_children(
    kafka_bootstrap: str, topics: Topics, routing: tuple[Any, _Router]
) -> None:
    s, router = routing
    child, provisional, item = _start(kafka_bootstrap, topics, s, router)
    # The CLI shows the MASH the same open item, as one JSON line.
    env = {"SAFESHARE_BOOTSTRAP": kafka_bootstrap, "SAFESHARE_NAMESPACE": topics.namespace}
    out = safeshare("identity", "review", "--subscriber", MASH, env=env)
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()
    assert json.loads(line)["review_id"] == item["review_id"]
    school = "example-academy-dsl"
    with IdentityDesk(bootstrap=kafka_bootstrap, subscriber=school, topics=topics) as desk:
        decision = desk.link(child, provisional, decided_by="A Teacher")
    [routed] = router.next()
    assert routed.quarantined == "NOT_ENTITLED" and routed.identity is None
    [q] = [CODEC.decode(r.value or b"", "safeshare.QuarantineRecord")
           for r in read_all(kafka_bootstrap, topics.quarantine)]
    assert q["reason"] == "NOT_ENTITLED" and "identity.deciders" in q["detail"]
    assert q["source_topic"] == topics.identity_decisions(school)
    leaves = read_leaves(kafka_bootstrap, topics)
    [audited] = [lf for lf in leaves if lf.event_id == decision]
    assert (audited.kind, audited.source_agency, audited.reason) == (
        LeafKind.QUARANTINED, school, "NOT_ENTITLED")
    assert not [lf for lf in leaves if lf.kind is LeafKind.LINKED]
    # Nothing changed: the next such event is still the provisional child's.
    jim = _jim()
    publish(kafka_bootstrap, topics, "safe-return-charity", jim)
    assert router.identities() == ["LINK"]
    assert _under(kafka_bootstrap, topics, jim["event_id"]) == provisional
