"""The DPO's pages in the workspace, against the real broker, router and
checkpointer: a subject-access report page with its PDF and proofs (which
`safeshare audit verify-proof` accepts), the s.62 CSV, the checkpoint history
with its verification result. Only a user with the dpo role gets them (403 for
a practitioner, sign-in for nobody), and a DPO does not open concerns."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from broker.kafka.admin import Admin
from broker.topics import Topics
from tests.helpers import create_topics, example, publish, read_all, settings_for, wait_for
from tests.workspace_helpers import cli, http_sign_in, running_workspace

pytestmark = pytest.mark.kafka
DPO_PAGES = ("/workspace/dpo/", "/workspace/dpo/s62.csv", "/workspace/dpo/checkpoints",
             "/workspace/dpo/subject-access?subject=x",
             "/workspace/dpo/subject-access.pdf?subject=x",
             "/workspace/dpo/subject-access.proofs.json?subject=x")


def test_the_dpo_pages_give_the_reports_and_only_to_the_dpo(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    s = settings_for(topics, home)
    policy = create_topics(admin, s)
    n = 2 * len(policy.subscribers)  # one leaf per event and subscriber (shared or withheld)
    missing = example("missing_episode", risk_level="CRITICAL")
    missing["sharing"]["break_glass"] = True
    health = example("health_concern")
    with running_workspace(kafka_bootstrap, topics, s, policy) as url:
        publish(kafka_bootstrap, topics, "devon-cornwall-police", missing)
        publish(kafka_bootstrap, topics, "torbay-hospital", health)
        wait_for("both events routed", lambda: len(read_all(
            kafka_bootstrap, topics.feed("torbay-mash"))) >= 2, timeout_s=90)

        nobody = http_sign_in(url, "sam")
        nobody.cookies.clear()
        sam = http_sign_in(url, "sam")
        for path in DPO_PAGES:
            assert nobody.get(path).status_code == 303, path  # to the sign-in page
            r = sam.get(path)
            assert r.status_code == 403 and "for the dpo role" in r.text, path
        # sam reads the concern: the log names sam by a keyed pseudonym only, the
        # DPO's s.62 report by name (s.62(2): who consulted), checked below.
        assert sam.get(f"/workspace/events/{missing['event_id']}").status_code == 200

        dee = http_sign_in(url, "dee")
        assert dee.get(f"/workspace/events/{missing['event_id']}").status_code == 403
        assert dee.get(f"/workspace/children/{missing['subject']['pseudonym']}"
                       ).status_code == 403
        assert dee.get("/workspace/", follow_redirects=True).url.path == "/workspace/dpo/"
        # Before the checkpointer has run, the page says what is missing.
        r = dee.get("/workspace/dpo/checkpoints")
        assert r.status_code == 503 and "no trusted log key yet" in r.text
        for path in DPO_PAGES[1:]:  # and so do the downloads: a page, not a file
            r = dee.get(path)
            assert r.status_code == 503 and "no trusted log key yet" in r.text, path
            assert "content-disposition" not in r.headers, path

        assert cli(home, topics, kafka_bootstrap, "audit", "checkpoint").exit_code == 0
        psn = missing["subject"]["pseudonym"]
        page = dee.get("/workspace/dpo/subject-access", params={"subject": psn})
        assert page.status_code == 200, page.text
        text = page.text
        assert "Audit log verified:" in text
        assert missing["event_id"] in text and health["event_id"] in text
        assert "break-glass (review within 72 h)" in text and "no review recorded" in text
        assert text.count(" in checkpoint ") == n
        pdf = dee.get("/workspace/dpo/subject-access.pdf", params={"subject": psn})
        assert pdf.content.startswith(b"%PDF-")
        assert "attachment" in pdf.headers["content-disposition"]
        proofs = tmp_path / "proofs.json"
        proofs.write_bytes(dee.get("/workspace/dpo/subject-access.proofs.json",
                                   params={"subject": psn}).content)
        ok = cli(home, topics, kafka_bootstrap, "audit", "verify-proof", str(proofs))
        assert ok.exit_code == 0 and ok.output.count("OK leaf") == n, ok.output

        got = dee.get("/workspace/dpo/s62.csv")
        assert got.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(got.text)))
        assert ("consultation", "user:sam", missing["event_id"]) in {
            (r["record"], r["by"], r["event_id"]) for r in rows}
        assert not any(b"user:sam" in r.value for r in read_all(kafka_bootstrap, topics.audit))
        assert ("disclosure", "torbay-mash") in {
            (r["record"], r["party"]) for r in rows if r["event_id"] == missing["event_id"]}
        assert not any(r["event_id"] == health["event_id"] and r["record"] == "disclosure"
                       for r in rows)  # not law-enforcement data

        cps = dee.get("/workspace/dpo/checkpoints")
        assert cps.status_code == 200 and "verified:" in cps.text
        assert re.search(r"<tr><td>[1-9]\d*</td><td><code>", cps.text), cps.text
