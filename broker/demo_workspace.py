"""The demo's MASH workspace: a practitioner and a DPO sign in over HTTPS.

``make run`` mounts the workspace on its HTTPS gateway with two demonstration
users of the Torbay MASH: a practitioner (the queue) and its data protection
officer (subject-access reports). Their passwords are made on the first run
and kept beside their scrypt hashes under ``$SAFESHARE_HOME/workspace/`` (mode
0600), so a person can sign in with a browser while ``make run`` keeps
serving: in a terminal it serves until Ctrl-C (``SAFESHARE_DEMO_SERVE=0``
stops straight away, ``=1`` serves without a terminal). The step signs in as
a browser would (CSRF token, session cookie) and prints what the queue shows,
then what the DPO's subject-access report of the run's child says.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from broker.policy import Policy
from broker.signing.feedkeys import FeedKeyring, keyring_path
from broker.topics import Topics
from broker.workspace import WorkspaceConfig
from broker.workspace.render import DpoConfig
from broker.workspace.sessions import hash_password, load_users

SUBSCRIBER = "torbay-mash"
USERNAME = "mash.practitioner"
DPO_USERNAME = "mash.dpo"
_ROW = re.compile(r'<tr class="rag-(\w+)" data-event="([^"]+)"[^>]*>(.*?)</tr>', re.S)
_CELL = re.compile(r"<td>(.*?)</td>", re.S)
_TAG = re.compile(r"<[^>]+>")
#: The demonstration users: username -> (display name, role, password file).
_USERS = {
    USERNAME: ("MASH practitioner (demo)", "practitioner", "demo-password"),
    DPO_USERNAME: ("MASH data protection officer (demo)", "dpo", "demo-dpo-password"),
}


def _secret(path: Path) -> str:
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def demo_users(home: Path) -> tuple[Path, dict[str, str]]:
    """The users file with the demonstration users, and their passwords by username."""
    directory = home / "workspace"
    directory.mkdir(parents=True, exist_ok=True)
    users = directory / "demo-users.yaml"
    secrets_ = {u: directory / f for u, (_, _, f) in _USERS.items()}
    if not (users.exists() and all(p.exists() for p in secrets_.values())):
        doc = {"users": [{"username": u, "subscriber": SUBSCRIBER, "name": name, "role": role,
                          "password": hash_password(_secret(secrets_[u]))}
                         for u, (name, role, _) in _USERS.items()]}
        users.write_text(yaml.safe_dump(doc, sort_keys=False))
    return users, {u: p.read_text().strip() for u, p in secrets_.items()}


def workspace_config(home: Path, bootstrap: str, topics: Topics,
                     policy: Policy) -> tuple[WorkspaceConfig, dict[str, str]]:
    """The workspace the demo's gateway serves, and the users' passwords."""
    path, passwords = demo_users(home)
    users = load_users(path, {s.id for s in policy.subscribers})
    keyrings = {}
    ring = keyring_path(home, SUBSCRIBER)
    if ring.exists():  # the MASH's feed is confidential: the workspace opens it
        keyrings[SUBSCRIBER] = FeedKeyring.load(ring)
    # The DPO's reports are checked against the demo's log keys (its keys directory).
    return WorkspaceConfig(users=users, bootstrap=bootstrap, topics=topics, policy=policy,
                           keyrings=keyrings, dpo=DpoConfig(keys_dir=home / "keys")), passwords


def _text(cell: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", cell)).split())


@contextmanager
def _sign_in(url: str, ca: str, username: str, password: str) -> Iterator[httpx.Client]:
    """A client signed in to the workspace as a browser signs in (CSRF, cookie)."""
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=ca),
                      timeout=30.0) as web:
        form = web.get("/workspace/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        if csrf is None:
            raise RuntimeError("the workspace sign-in page has no CSRF token")
        signed = web.post("/workspace/signin", data={
            "username": username, "password": password, "csrf": csrf.group(1)})
        if signed.status_code != 303:
            raise RuntimeError(f"workspace sign-in of {username} answered {signed.status_code}")
        yield web


def show_queue(url: str, ca: str, passwords: dict[str, str], ids: set[str],
               out: Callable[[str], None], timeout_s: float = 20.0) -> int:
    """Sign in as the practitioner and print this run's rows of the queue."""
    with _sign_in(url, ca, USERNAME, passwords[USERNAME]) as web:
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


def show_subject_access(url: str, ca: str, passwords: dict[str, str], child: str,
                        out: Callable[[str], None]) -> str:
    """Sign in as the DPO and print what the subject-access report of ``child`` says."""
    with _sign_in(url, ca, DPO_USERNAME, passwords[DPO_USERNAME]) as web:
        page = web.get("/workspace/dpo/subject-access", params={"subject": child})
    status = re.search(r'role="status">(.*?)</p>', page.text, re.S)
    lines = re.search(r"<p>(\d+) decisions\.", page.text)
    said = _text(status.group(1)) if status else f"answered {page.status_code}"
    out(f"  {DPO_USERNAME} (DPO) signed in: subject-access report of {child}:"
        f" {lines.group(1) if lines else 0} decisions, each with its inclusion proof; {said}")
    out(f"    (as PDF: {url}/workspace/dpo/subject-access.pdf?subject={child})")
    return said


def serve_if_wanted(url: str, passwords: dict[str, str], out: Callable[[str], None]) -> None:
    """Keep serving for a person at a terminal (or when asked to) until Ctrl-C."""
    wanted = os.environ.get("SAFESHARE_DEMO_SERVE")
    if wanted is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")
    else:
        serve = wanted not in ("", "0", "false", "no")
    if not serve:
        out("  (SAFESHARE_DEMO_SERVE=1 make run keeps the gateway and workspace serving)")
        return
    out(f"\nThe workspace is serving: {url}/workspace/")
    for username, password in passwords.items():
        out(f"  user {username}  password {password}")
    out("(the server certificate is the demo CA's; Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out("stopped")
