"""The demo's MASH workspace: one practitioner signs in over HTTPS and reads the queue.

``make run`` mounts the workspace on its HTTPS gateway with one demonstration
user, a practitioner of the Torbay MASH. The password is made on the first run
and kept beside its scrypt hash under ``$SAFESHARE_HOME/workspace/`` (mode 0600),
so a person can sign in with a browser while ``make run`` keeps serving: in a
terminal it serves until Ctrl-C (``SAFESHARE_DEMO_SERVE=0`` stops straight away,
``=1`` serves without a terminal). The step signs in as a browser would (CSRF
token, session cookie) and prints what the queue shows.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from broker.policy import Policy
from broker.signing.feedkeys import FeedKeyring, keyring_path
from broker.topics import Topics
from broker.workspace import WorkspaceConfig
from broker.workspace.sessions import hash_password, load_users

SUBSCRIBER = "torbay-mash"
USERNAME = "mash.practitioner"
_ROW = re.compile(r'<tr class="rag-(\w+)" data-event="([^"]+)"[^>]*>(.*?)</tr>', re.S)
_CELL = re.compile(r"<td>(.*?)</td>", re.S)
_TAG = re.compile(r"<[^>]+>")


def demo_users(home: Path) -> tuple[Path, str]:
    """The users file with the demonstration practitioner, and its password."""
    directory = home / "workspace"
    directory.mkdir(parents=True, exist_ok=True)
    users, secret = directory / "demo-users.yaml", directory / "demo-password"
    if not (users.exists() and secret.exists()):
        password = secrets.token_urlsafe(12)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        doc = {"users": [{"username": USERNAME, "subscriber": SUBSCRIBER,
                          "name": "MASH practitioner (demo)",
                          "password": hash_password(password)}]}
        users.write_text(yaml.safe_dump(doc, sort_keys=False))
    return users, secret.read_text().strip()


def workspace_config(home: Path, bootstrap: str, topics: Topics,
                     policy: Policy) -> tuple[WorkspaceConfig, str]:
    """The workspace the demo's gateway serves, and the practitioner's password."""
    path, password = demo_users(home)
    users = load_users(path, {s.id for s in policy.subscribers})
    keyrings = {}
    ring = keyring_path(home, SUBSCRIBER)
    if ring.exists():  # the MASH's feed is confidential: the workspace opens it
        keyrings[SUBSCRIBER] = FeedKeyring.load(ring)
    return WorkspaceConfig(users=users, bootstrap=bootstrap, topics=topics, policy=policy,
                           keyrings=keyrings), password


def _text(cell: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", cell)).split())


def show_queue(url: str, ca: str, password: str, ids: set[str],
               out: Callable[[str], None], timeout_s: float = 20.0) -> int:
    """Sign in as the practitioner and print this run's rows of the queue."""
    tls = ssl.create_default_context(cafile=ca)
    with httpx.Client(base_url=url, verify=tls, timeout=30.0) as web:
        form = web.get("/workspace/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        if csrf is None:
            raise RuntimeError("the workspace sign-in page has no CSRF token")
        signed = web.post("/workspace/signin", data={
            "username": USERNAME, "password": password, "csrf": csrf.group(1)})
        if signed.status_code != 303:
            raise RuntimeError(f"workspace sign-in answered {signed.status_code}")
        deadline = time.monotonic() + timeout_s
        while True:  # the workspace follows the feed; wait for this run's concerns
            page = web.get("/workspace/").text
            rows = [m for m in _ROW.finditer(page) if m.group(2) in ids]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    out(f"  {USERNAME} ({SUBSCRIBER}) signed in over HTTPS: {len(rows)} concern(s) of "
        "this run in the queue, most urgent first")
    for m in rows[:6]:
        cells = _CELL.findall(m.group(3))
        rag, category, summary = _text(cells[0]), _text(cells[2]), _text(cells[3])
        left, _, due = cells[1].partition("<br>")  # "79h 35m left" / "TRIAGE_AMBER due ..."
        clock = f"{_text(left)} ({_text(due).split(' ')[0]})" if due else _text(left)
        out(f"    {rag:<6} {category:<22} {clock:<34} {summary[:56]}")
    return len(rows)


def serve_if_wanted(url: str, password: str, out: Callable[[str], None]) -> None:
    """Keep serving for a person at a terminal (or when asked to) until Ctrl-C."""
    wanted = os.environ.get("SAFESHARE_DEMO_SERVE")
    if wanted is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")
    else:
        serve = wanted not in ("", "0", "false", "no")
    if not serve:
        out("  (SAFESHARE_DEMO_SERVE=1 make run keeps the gateway and workspace serving)")
        return
    out(f"\nThe workspace is serving: {url}/workspace/  user {USERNAME}  password {password}")
    out("(the server certificate is the demo CA's; Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out("stopped")
