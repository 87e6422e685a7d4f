"""The identity review page, against the real broker and router: the police name a
child by NHS number, the return-home service sends the same names with a birth
date a day later, so the router raises a review item for the MASH. A MASH
practitioner sees it in the workspace and links the two; the decision names
them, the router applies it (LINKED in the audit log) and the item is no longer
open. A school's DSL gets 403 and writes nothing. A second review, decided
"two children", is answered with a KEPT_APART leaf and changes no child."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from broker.api import IdentityDesk
from broker.audit.leaf import LeafKind
from broker.identity.pseudonym import PartnershipKeys
from broker.kafka.admin import Admin
from broker.topics import Topics
from tests.helpers import (
    create_topics,
    publish,
    read_all,
    read_leaves,
    settings_for,
    wait_for,
)
from tests.test_router_identity import NHS, _police
from tests.test_router_identity_decisions import _jim, _under
from tests.workspace_helpers import csrf_of, http_sign_in, running_workspace

pytestmark = pytest.mark.kafka
MASH = "torbay-mash"


@contextmanager
def _reviewed(
    bootstrap: str, topics: Topics, admin: Admin, home: Path
) -> Iterator[tuple[str, IdentityDesk, dict[str, Any]]]:
    """A running workspace whose MASH has one open review item: the police name the
    child (NHS number) first, which the router must have routed before the
    return-home service's "James" arrives (it reads agencies' topics in any order).
    Yields the URL, the MASH's desk and the item."""
    s = settings_for(topics, home)
    policy = create_topics(admin, s)
    with running_workspace(bootstrap, topics, s, policy) as url, IdentityDesk(
        bootstrap=bootstrap, subscriber=MASH, topics=topics
    ) as desk:
        police = _police()
        publish(bootstrap, topics, "devon-cornwall-police", police)
        wait_for("the police event routed", lambda: _routed(bootstrap, topics, police))
        jim = _jim()
        publish(bootstrap, topics, "safe-return-charity", jim)
        wait_for("the review item", lambda: len(desk.reviews(timeout_s=5)) == 1, timeout_s=120)
        [item] = desk.reviews()
        child = PartnershipKeys.load(s.partnership_keys_dir).of_nhs_number(NHS)
        assert (item["candidate"], item["event_id"]) == (child, jim["event_id"])
        yield url, desk, item


def _routed(bootstrap: str, topics: Topics, event: dict[str, Any]) -> bool:
    """The MASH received ``event``."""
    return any(event["event_id"].encode() in (r.value or b"")
               for r in read_all(bootstrap, topics.feed(MASH)))


@pytest.mark.timeout(600)
def test_a_mash_practitioner_links_a_review_item_from_the_workspace(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    with _reviewed(kafka_bootstrap, topics, admin, tmp_path / "home") as (url, desk, item):
        child = item["candidate"]

        dana = http_sign_in(url, "dana")  # a school's DSL: not a deciding team
        page = dana.get("/workspace/identity")
        assert page.status_code == 403 and "does not decide" in page.text
        refused = dana.post("/workspace/identity/link", data={
            "csrf": csrf_of(dana.get("/workspace/").text), "review_id": item["review_id"]})
        assert refused.status_code == 403
        assert "Identity reviews" not in dana.get("/workspace/").text

        sam = http_sign_in(url, "sam")
        page = sam.get("/workspace/identity")
        assert page.status_code == 200
        assert f'data-review="{item["review_id"]}"' in page.text
        assert item["provisional"] in page.text and child in page.text
        assert "Identity reviews" in sam.get("/workspace/").text
        # No CSRF token: nothing is written.
        assert sam.post("/workspace/identity/link",
                        data={"review_id": item["review_id"]}).status_code == 403
        assert desk.decisions() == []
        done = sam.post("/workspace/identity/link", data={
            "csrf": csrf_of(page.text), "review_id": item["review_id"]})
        assert done.status_code == 303 and done.headers["location"].endswith("?done=link")

        [decision] = desk.decisions()
        assert (decision["action"], decision["pseudonym"], decision["other_pseudonym"],
                decision["decided_by"], decision["review_id"]) == (
            "LINK", child, item["provisional"], "sam", item["review_id"])
        assert desk.reviews() == []
        assert f'data-review="{item["review_id"]}"' not in sam.get("/workspace/identity").text

        def linked() -> bool:
            return any(lf.kind is LeafKind.LINKED for lf in read_leaves(kafka_bootstrap, topics))

        wait_for("the router applies the link", linked, timeout_s=120)
        # Asked again (a second tab), the same item is no longer open: 404, nothing written.
        again = sam.post("/workspace/identity/link", data={
            "csrf": csrf_of(page.text), "review_id": item["review_id"]})
        assert again.status_code == 404
        assert len(desk.decisions()) == 1


@pytest.mark.timeout(600)
def test_two_children_kept_apart_answer_the_review_and_change_nothing(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    with _reviewed(kafka_bootstrap, topics, admin, tmp_path / "home") as (url, desk, item):
        sam = http_sign_in(url, "sam")
        page = sam.get("/workspace/identity")
        kept = sam.post("/workspace/identity/keep-apart", data={
            "csrf": csrf_of(page.text), "review_id": item["review_id"]})
        assert kept.status_code == 303 and kept.headers["location"].endswith("?done=keep-apart")
        [decision] = desk.decisions()
        assert (decision["action"], decision["pseudonym"], decision["other_pseudonym"]) == (
            "KEEP_APART", item["candidate"], item["provisional"])
        assert desk.reviews() == []

        def kept_apart() -> list[LeafKind]:
            return [lf.kind for lf in read_leaves(kafka_bootstrap, topics)
                    if lf.kind in (LeafKind.KEPT_APART, LeafKind.LINKED, LeafKind.QUARANTINED)]

        wait_for("the router audits the decision", lambda: bool(kept_apart()), timeout_s=120)
        assert kept_apart() == [LeafKind.KEPT_APART]
        # Nothing moved: the return-home service's next record follows its own child,
        # not the police's.
        again = _jim()
        publish(kafka_bootstrap, topics, "safe-return-charity", again)
        wait_for("the next record routed", lambda: _routed(kafka_bootstrap, topics, again),
                 timeout_s=120)
        assert _under(kafka_bootstrap, topics, again["event_id"]) == item["provisional"]
