"""``make run`` (broker.demo) end to end, with a confidential feed in the scenario."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker import demo
from broker.signing.feedkeys import FeedKeyring, keyring_path
from broker.topics import Topics


@pytest.mark.kafka
def test_make_run_seals_the_confidential_feed_reads_it_and_verifies_the_audit(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFESHARE_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("SAFESHARE_NAMESPACE", topics.namespace)
    monkeypatch.setenv("SAFESHARE_HOME", str(tmp_path))
    monkeypatch.setenv("SAFESHARE_DEMO_SERVE", "0")  # run the scenario, then stop
    scenario = json.loads(demo.SCENARIO.read_text(encoding="utf-8"))
    assert scenario["confidential_feeds"]["subscribers"] == ["torbay-mash"]
    lines: list[str] = []
    assert demo.main([], out=lines.append) == 0
    text = "\n".join(lines)
    ring = FeedKeyring.load(keyring_path(tmp_path, "torbay-mash"))
    mash = text.split("\n  torbay-mash (mash_team): ", 1)[1].split("\n\n", 1)[0]
    assert (
        f"sealed to it with HPKE MLKEM768-X25519; opened with its keyring (key {ring.keys[0].id})"
        in mash
    )
    assert "on the wire: safeshare.EncryptedFeedRecord" in mash and "kem 0x647a" in mash
    assert "summary: Attended A&E intoxicated" in mash  # opened, not just counted
    torbay_csc = text.split("\n  torbay-csc (childrens_social_care): ", 1)[1].split("\n\n", 1)[0]
    assert "sealed" not in torbay_csc  # a plain feed stays plain
    # the school's events went through the HTTPS gateway, signed by the school
    assert "(HTTPS, signed by the agency)" in text
    via = text.split("torbay-mash through the HTTPS gateway", 1)[1].split("\n", 1)[0]
    n = int(via.split(": ", 1)[1].split(" ")[0])
    assert n > 0 and f"{n} sealed" in via, via
    # the MASH practitioner signs in to the workspace and sees this run's concerns,
    # opened from the confidential feed, each with its statutory clock
    ws = text.split("-- 8. The MASH workspace", 1)[1]
    seen = int(ws.split("signed in over HTTPS: ", 1)[1].split(" ")[0])
    # Jamie's 5, the two other girls found at the flat, and the detector's alerts, each
    # once at its newest version: the flat (3 children) and, as the feed's order has
    # it, Jamie's first return with no interview in 72 hours.
    assert seen >= 8, ws
    assert "PATTERN" in ws, ws
    found = text.split("-- 2b. The pattern detector", 1)[1].split("\n--", 1)[0]
    assert "PATTERN SHARED_PLACE" in found and "3 child(ren) at " in found, found
    assert "- PATTERN" in mash  # shared with the MASH, sealed to it, opened by it
    school = text.split("\n  example-academy-dsl (", 1)[1].split("\n\n", 1)[0]
    assert "PATTERN" not in school
    assert "Attended A&E intoxicated" in ws and " left (TRIAGE_AMBER)" in ws, ws
    # the DPO opens the child's subject-access report, verified against the audit log
    sar = ws.split("mash.dpo (DPO) signed in: subject-access report of ", 1)[1]
    decisions = int(sar.split(": ", 1)[1].split(" ")[0])
    assert decisions > 0 and "Audit log verified" in sar.split("\n", 1)[0], sar
    assert "verify: OK" in text and text.rstrip().endswith("Done.")
