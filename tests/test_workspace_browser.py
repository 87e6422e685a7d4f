"""The workspace in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against the real broker, router and loop service: sign in, watch a
Red concern arrive live, open the chronology, triage, see the referrer's status
notice; a school user cannot open a health event by URL and sees withheld
fields as withheld. Screenshots of each page go to docs/screenshots/."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.api import Publisher
from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.kafka.admin import Admin
from broker.loop.core import NOTICE
from broker.topics import Topics
from tests.helpers import create_topics, example, read_all, settings_for, wait_for
from tests.test_router_identity import _police
from tests.test_router_identity_decisions import _jim
from tests.workspace_helpers import CODEC, PASSWORD, cli, running_workspace

pytestmark = pytest.mark.kafka

playwright_sync = pytest.importorskip("playwright.sync_api")
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")
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


# Every rule axe-core tags as WCAG 2.0, 2.1 or 2.2, levels A and AA.
WCAG22AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
AXE = axe_sync.Axe()
CHECKED: list[str] = []


def accessible(page: object, what: str) -> None:
    """axe-core, injected into the page as it is now, finds no WCAG 2.2 AA violation."""
    r = AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG22AA},
                               "resultTypes": ["violations"]})
    assert r.violations_count == 0, f"{what}: {r.generate_report()}"
    CHECKED.append(what)


def shot(page: object, path: Path, what: str, **kw: object) -> None:
    """Check the page with axe, then take its screenshot."""
    accessible(page, what)
    page.screenshot(path=str(path), **kw)  # type: ignore[attr-defined]


def recent(event: dict, hours_ago: float) -> dict:  # type: ignore[type-arg]
    """A missing episode ``hours_ago`` (the detector forgets what is older than its window)."""
    def iso(h: float) -> str:
        at = datetime.now(UTC) - timedelta(hours=h)
        return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    event["occurred_at"] = event["reported_at"] = iso(hours_ago)
    event["payload"].update(started_at=iso(hours_ago + 3), ended_at=iso(hours_ago))
    return event


def sign_in(page: object, url: str, username: str, then: str = "/workspace/") -> None:
    page.goto(f"{url}/workspace/signin")  # type: ignore[attr-defined]
    page.get_by_label("Username").fill(username)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}{then}")  # type: ignore[attr-defined]


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
    oldest = recent(example("missing_episode", risk_level="MEDIUM"), hours_ago=24 * 9)
    earlier = recent(example("missing_episode", risk_level="MEDIUM"), hours_ago=24 * 2)
    red = recent(example("missing_episode", risk_level="CRITICAL",
                         summary="Red: missing again tonight"), hours_ago=1)
    red["sharing"]["break_glass"] = True  # an emergency share, to be reviewed within 72 h
    with Publisher(bootstrap=kafka_bootstrap, agency="torbay-hospital", topics=topics) as p:
        p.publish_json(health)
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police",
                   topics=topics) as police, running_workspace(
            kafka_bootstrap, topics, s, policy) as url:
        police.publish_json(oldest)
        police.publish_json(earlier)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        page = ctx.new_page()
        page.goto(f"{url}/workspace/signin")
        shot(page, shots / "signin.png", "signin")
        sign_in(page, url, "sam")
        page.wait_for_selector(f"tr[data-event='{earlier['event_id']}']", timeout=90_000)
        page.wait_for_selector(f"tr[data-event='{health['event_id']}']", timeout=30_000)

        # A Red concern published now appears without a reload, above the others.
        published = time.monotonic()
        police.publish_json(red)
        page.wait_for_selector(f"tr[data-event='{red['event_id']}']", timeout=2_000)
        arrived_s = time.monotonic() - published
        first = page.locator("#queue tbody tr").first
        assert first.get_attribute("data-event") == red["event_id"], arrived_s
        assert "RED" in first.inner_text()
        # The loop starts its clock: the row shows the time left, without a reload.
        clock = page.locator(f"tr[data-event='{red['event_id']}'] [data-due]")
        clock.wait_for(timeout=90_000)
        assert re.fullmatch(r"(\d+h \d\dm|\d+m) left", clock.inner_text()), clock.inner_text()
        wait_for("the new rows' highlight to fade", lambda: page.evaluate(
            "document.getAnimations().length") == 0, timeout_s=10)
        shot(page, shots / "queue.png", "queue")
        # The time left counts down in the page: a clock due two minutes ago reads overdue.
        clock.evaluate("c => c.setAttribute('data-due', String(Date.now() - 120000))")
        wait_for("the clock to count down", lambda: clock.inner_text() == "overdue by 2m",
                 timeout_s=20, poll_s=0.5)

        # The chronology: every event about the child in time order; a consultation.
        page.locator(f"tr[data-event='{red['event_id']}'] a", has_text="psn-").click()
        page.wait_for_selector("h1:has-text('Chronology')")
        items = page.locator("ol.chron > li")
        concerns = {health["event_id"], oldest["event_id"], earlier["event_id"], red["event_id"]}
        ids = [items.nth(i).locator("a").first.get_attribute("href").rsplit("/", 1)[1]  # type: ignore[union-attr]
               for i in range(items.count())]
        # The four concerns in the order they happened (and any pattern alert
        # about the child the detector has raised by now, in its place).
        assert [i for i in ids if i in concerns] == [
            health["event_id"], oldest["event_id"], earlier["event_id"], red["event_id"]], ids
        shot(page, shots / "chronology.png", "chronology", full_page=True)
        shown = set(ids)

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
        shot(page, shots / "concern-triaged.png", "concern-triaged", full_page=True)
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
        shot(page, shots / "queue-tablet.png", "queue-tablet")

        # Alerts (pattern alerts are drawn with their evidence: test_workspace_render).
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(f"{url}/workspace/alerts")
        shot(page, shots / "alerts.png", "alerts")

        # Identity reviews: the return-home service's "James", born a day after the
        # police's, is a record the router could not place for certain.
        police.publish_json(_police())
        with Publisher(bootstrap=kafka_bootstrap, agency="safe-return-charity",
                       topics=topics) as rhi:
            rhi.publish_json(_jim())

        def review_shown() -> bool:
            page.goto(f"{url}/workspace/identity")
            return page.locator("li[data-review]").count() == 1
        wait_for("the review item on the identity page", review_shown, timeout_s=90, poll_s=1)
        shot(page, shots / "identity.png", "identity reviews")
        ctx.close()

        # The school: the health event is not its to open, whatever the URL.
        school = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        sp = school.new_page()
        sign_in(sp, url, "dana")
        sp.wait_for_selector(f"tr[data-event='{red['event_id']}']", timeout=30_000)
        resp = sp.goto(f"{url}/workspace/events/{health['event_id']}")
        assert resp is not None and resp.status == 404
        accessible(sp, "not-found")
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
        shot(sp, shots / "school-withheld.png", "school-withheld", full_page=True)
        sp.goto(f"{url}/workspace/alerts")
        accessible(sp, "school-alerts")
        school.close()

        # The DPO's pages, once the checkpointer has signed the log.
        assert cli(tmp_path, topics, kafka_bootstrap, "audit", "checkpoint").exit_code == 0
        dpo = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        dp = dpo.new_page()
        sign_in(dp, url, "dee", then="/workspace/dpo/")
        shot(dp, shots / "dpo.png", "dpo")
        dp.get_by_label("Child's pseudonym").fill(red["subject"]["pseudonym"])
        dp.get_by_role("button", name="Show the report").click()
        dp.wait_for_selector("text=Audit log verified")
        assert dp.locator("td", has_text="reviewed by sam at").count() >= 1
        shot(dp, shots / "dpo-subject-access.png", "dpo-subject-access")
        with dp.expect_download() as pdf:
            dp.get_by_role("link", name="Download as PDF").click()
        assert Path(pdf.value.path()).read_bytes().startswith(b"%PDF-")
        dp.goto(f"{url}/workspace/dpo/checkpoints")
        dp.wait_for_selector("text=verified:")
        shot(dp, shots / "dpo-checkpoints.png", "dpo-checkpoints")
        resp = dp.goto(f"{url}/workspace/events/{red['event_id']}")
        assert resp is not None and resp.status == 403
        accessible(dp, "forbidden")
        # The check can fail: the same page with an unlabelled field is caught.
        dp.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', "
                    "'<input id=x-unlabelled>')")
        with pytest.raises(AssertionError, match="label"):
            accessible(dp, "forbidden, spoilt")
        dpo.close()
        assert len(CHECKED) == 14, CHECKED
