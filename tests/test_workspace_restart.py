"""The triage shown by the workspace survives a restart: a real `safeshare
workspace serve` process is triaged through its form, stopped, started again,
and the new process shows the rating, decision and note it read back from the
subscriber's acknowledgements topic on the real broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from broker.kafka.admin import Admin
from broker.topics import Topics
from broker.workspace.sessions import hash_password
from tests.helpers import ROOT, create_topics, example, publish, run_router, settings_for, wait_for
from tests.workspace_helpers import PASSWORD, csrf_of, free_port, http_sign_in

pytestmark = pytest.mark.kafka


@contextmanager
def serve(env: dict[str, str], users: Path) -> Iterator[str]:
    """A `safeshare workspace serve --http` process; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli.main", "workspace", "serve", "--users", str(users),
         "--http", "--port", str(port)], env={**os.environ, **env}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            return httpx.get(f"{url}/workspace/signin", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    try:
        wait_for("the workspace process to serve", up, timeout_s=60, poll_s=0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def row_of(c: httpx.Client, event_id: str) -> str:
    m = re.search(rf'<tr [^>]*data-event="{event_id}">(.*?)</tr>', c.get("/workspace/").text,
                  re.S)
    return m.group(1) if m else ""


def test_triage_is_read_back_from_the_acknowledgements_after_a_restart(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path / "home")
    create_topics(admin, s)
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  - {username: sam, subscriber: torbay-mash, name: Sam, "
                     f"password: '{hash_password(PASSWORD)}'}}\n")
    env = {"SAFESHARE_HOME": str(s.home), "SAFESHARE_NAMESPACE": topics.namespace,
           "SAFESHARE_BOOTSTRAP": kafka_bootstrap}
    red = example("missing_episode", risk_level="CRITICAL")
    publish(kafka_bootstrap, topics, "devon-cornwall-police", red)
    run_router(kafka_bootstrap, s)
    eid = red["event_id"]

    with serve(env, users) as url:
        c = http_sign_in(url)
        wait_for("the concern in the queue", lambda: "RED" in row_of(c, eid), timeout_s=30)
        assert "triaged" not in row_of(c, eid)
        page = c.get(f"/workspace/events/{eid}").text
        r = c.post(f"/workspace/events/{eid}/triage", data={
            "csrf": csrf_of(page), "rag": "GREEN", "outcome": "EARLY_HELP",
            "note": "Family support worker allocated."})
        assert r.status_code == 303, r.text
        assert "GREEN" in row_of(c, eid) and "triaged" in row_of(c, eid)

    with serve(env, users) as url:  # a new process: nothing in memory
        c = http_sign_in(url)
        wait_for("the triage read back", lambda: "triaged" in row_of(c, eid), timeout_s=30)
        row = row_of(c, eid)
        assert "GREEN" in row and "RED" not in row
        page = c.get(f"/workspace/events/{eid}").text
        assert "triage: GREEN; Family support worker allocated. (by sam," in page
        assert "decision: EARLY_HELP (by sam," in page
        assert page.count("<li>triage:") == 1  # read once, not once per follower pass
