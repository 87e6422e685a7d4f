"""The workspace in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against the real broker, router and loop service: sign in, watch a
Red concern arrive live, open the chronology, triage, see the referrer's status
notice; a school user cannot open a health event by URL and sees withheld
fields as withheld. Screenshots of each page go to docs/screenshots/."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.api import Publisher
from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.kafka.admin import Admin
from broker.loop.core import NOTICE
from broker.topics import Topics
from tests.helpers import create_topics, example, read_all, settings_for, wait_for
from tests.workspace_helpers import CODEC, PASSWORD, running_workspace

pytestmark = pytest.mark.kafka

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# `make screenshots` sets this to docs/screenshots; otherwise they go to a temporary directory.
SHOTS_DIR = os.environ.get("SAFESHARE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium (make setup / .ci/run)"
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def sign_in(page: object, url: str, username: str) -> None:
    page.goto(f"{url}/workspace/signin")  # type: ignore[attr-defined]
    page.get_by_label("Username").fill(username)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/workspace/")  # type: ignore[attr-defined]


def consultations(bootstrap: str, topics: Topics) -> list[AuditLeaf]:
    """The CONSULTED leaves of the audit log (one per record shown)."""
    return [leaf for r in read_all(bootstrap, topics.audit, timeout_s=1.0)
            for leaf in map(AuditLeaf.from_bytes, decode_batch(r.value or b""))
            if leaf.kind is LeafKind.CONSULTED]


def test_practitioner_sees_red_live_triages_and_school_sees_only_its_share(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path, browser: object
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    shots = Path(SHOTS_DIR) if SHOTS_DIR else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    health = example("health_concern")
    earlier = example("missing_episode", risk_level="MEDIUM")
    red = example("missing_episode", risk_level="CRITICAL", summary="Red: missing again tonight")
    red["sharing"]["break_glass"] = True  # an emergency share, to be reviewed within 72 h
    with Publisher(bootstrap=kafka_bootstrap, agency="torbay-hospital", topics=topics) as p:
        p.publish_json(health)
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police",
                   topics=topics) as police, running_workspace(
            kafka_bootstrap, topics, s, policy) as url:
        police.publish_json(earlier)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        page = ctx.new_page()
        page.goto(f"{url}/workspace/signin")
        page.screenshot(path=str(shots / "signin.png"))
        sign_in(page, url, "sam")
        page.wait_for_selector(f"tr[data-event='{earlier['event_id']}']", timeout=30_000)
        page.wait_for_selector(f"tr[data-event='{health['event_id']}']", timeout=30_000)

        # A Red concern published now appears without a reload, above the others.
        published = time.monotonic()
        police.publish_json(red)
        page.wait_for_selector(f"tr[data-event='{red['event_id']}']", timeout=2_000)
        arrived_s = time.monotonic() - published
        first = page.locator("#queue tbody tr").first
        assert first.get_attribute("data-event") == red["event_id"], arrived_s
        assert "RED" in first.inner_text()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "queue.png"))

        # The chronology: every event about the child in time order; a consultation.
        page.locator(f"tr[data-event='{red['event_id']}'] a", has_text="psn-").click()
        page.wait_for_selector("h1:has-text('Chronology')")
        items = page.locator("ol.chron > li")
        assert items.count() == 3
        page.screenshot(path=str(shots / "chronology.png"), full_page=True)
        shown = {health["event_id"], earlier["event_id"], red["event_id"]}

        def consulted() -> bool:
            # sam is named only by a keyed pseudonym, the same one for each record
            read = [c for c in consultations(kafka_bootstrap, topics)
                    if c.consulted_via == "workspace" and c.consulted_by != "user:sam"]
            return ({c.event_id for c in read} == shown
                    and len({c.consulted_by for c in read}) == 1)
        wait_for("the chronology's consultation record", consulted, timeout_s=10)

        # Triage by keyboard and form: an acknowledgement reaching the referrer's status.
        page.goto(f"{url}/workspace/events/{red['event_id']}")
        page.get_by_label("AMBER").check()
        page.get_by_label("Decision").select_option("STRATEGY_DISCUSSION")
        page.get_by_label("Note", exact=True).fill("Strategy discussion booked for 09:00.")
        page.get_by_role("button", name="Record triage").click()
        page.wait_for_selector("text=Triage recorded")
        page.screenshot(path=str(shots / "concern-triaged.png"), full_page=True)
        page.get_by_label("Yes").check()
        page.get_by_role("button", name="Record review").click()
        page.wait_for_selector("li:has-text('break-glass share justified: yes')")

        def acks() -> list[dict[str, object]]:
            return [CODEC.decode(r.value or b"", "safeshare.Acknowledgement") for r in read_all(
                kafka_bootstrap, topics.acks("torbay-mash"), timeout_s=1.0)]
        wait_for("the REVIEWED acknowledgement", lambda: any(
            a["event_id"] == red["event_id"] and a["kind"] == "REVIEWED"
            and a["actor"] == "sam" for a in acks()), timeout_s=15)

        def status() -> list[dict[str, object]]:
            return [CODEC.decode(r.value or b"", NOTICE) for r in read_all(
                kafka_bootstrap, topics.status("devon-cornwall-police"), timeout_s=1.0)]
        wait_for("the referrer's TRIAGE status", lambda: any(
            n["event_id"] == red["event_id"] and n["ack_kind"] == "TRIAGE"
            and n["about"] == "torbay-mash" for n in status()), timeout_s=30)

        # A tablet-width queue still works (no horizontal page scroll of the header).
        page.set_viewport_size({"width": 820, "height": 1180})
        page.goto(f"{url}/workspace/")
        page.keyboard.press("Tab")  # keyboard first: the skip link, then the navigation
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.screenshot(path=str(shots / "queue-tablet.png"))
        ctx.close()

        # The school: the health event is not its to open, whatever the URL.
        school = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        sp = school.new_page()
        sign_in(sp, url, "dana")
        sp.wait_for_selector(f"tr[data-event='{red['event_id']}']", timeout=30_000)
        resp = sp.goto(f"{url}/workspace/events/{health['event_id']}")
        assert resp is not None and resp.status == 404
        body = sp.content()
        assert health["payload"]["presentation"] not in body
        assert health["payload"]["injuries"] not in body
        # Its copy of the missing episode shows where the child was found as withheld.
        sp.goto(f"{url}/workspace/events/{red['event_id']}")
        withheld = sp.locator("tr.withheld")
        assert withheld.count() > 0
        text = sp.content()
        assert "payload.found" in text or "payload" in withheld.first.inner_text()
        assert red["payload"]["found"]["place"] not in text
        assert red["payload"]["last_seen"]["place"] not in text
        sp.screenshot(path=str(shots / "school-withheld.png"), full_page=True)
        sp.goto(f"{url}/workspace/alerts")
        sp.screenshot(path=str(shots / "alerts.png"))
        school.close()
