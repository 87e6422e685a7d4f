"""A linked child's chronology in the workspace, against the real broker and router:
the return-home service's record of "James" arrives under a provisional
pseudonym and goes to review; once a MASH practitioner links it and the router
has applied the link, the chronology of either pseudonym shows the police's and
the return-home service's records together. A decision the router did not apply
(no LINKED leaf names it) folds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.audit.leaf import LeafKind
from broker.kafka.admin import Admin
from broker.topics import Topics
from tests.helpers import read_leaves, wait_for
from tests.test_workspace_identity import _reviewed
from tests.workspace_helpers import csrf_of, http_sign_in

pytestmark = pytest.mark.kafka


@pytest.mark.timeout(600)
def test_a_linked_childs_chronology_shows_what_came_under_either_pseudonym(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    with _reviewed(kafka_bootstrap, topics, admin, tmp_path / "home") as (url, desk, item):
        child, provisional, jim = item["candidate"], item["provisional"], item["event_id"]
        sam = http_sign_in(url, "sam")
        wait_for("the MASH's feed holds both", lambda: jim in sam.get(
            f"/workspace/children/{provisional}").text, timeout_s=60)
        before = sam.get(f"/workspace/children/{child}").text
        assert jim not in before and "Linked as the same child" not in before

        # A decision the router never applied (it names a child nobody has) folds nothing.
        desk.link(child, "psn-nobody-knows", decided_by="sam")
        page = sam.get("/workspace/identity")
        done = sam.post("/workspace/identity/link", data={
            "csrf": csrf_of(page.text), "review_id": item["review_id"]})
        assert done.status_code == 303
        wait_for("the router applies the link", lambda: any(
            lf.kind is LeafKind.LINKED for lf in read_leaves(kafka_bootstrap, topics)),
            timeout_s=120)

        def folded() -> bool:
            return jim in sam.get(f"/workspace/children/{child}").text

        wait_for("the chronology folds the linked child", folded, timeout_s=30)
        for asked, other in ((child, provisional), (provisional, child)):
            text = sam.get(f"/workspace/children/{asked}").text
            assert "Linked as the same child" in text and other in text
            assert jim in text and text.count('class="card"') == 2, text
        assert "psn-nobody-knows" not in sam.get(f"/workspace/children/{child}").text
