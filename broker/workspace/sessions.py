"""Who is signed in: people of a subscriber, a signed session cookie, CSRF tokens.

Users come from a YAML file (``users: [{username, subscriber, name, password, role}]``,
role ``practitioner`` by default or ``dpo``)
whose ``password`` is ``scrypt$<salt b64>$<hash b64>`` (:func:`hash_password`;
scrypt n=2**14, r=8, p=1 from ``cryptography``), never the password itself.

The session is a cookie ``<payload b64>.<HMAC-SHA256 b64>`` keyed by a server
secret (``SAFESHARE_WORKSPACE_SECRET`` or random per process), holding the
username, subscriber and expiry; HttpOnly, SameSite=Strict, Secure over HTTPS.
Each form carries a CSRF token: the HMAC of the session (or, on the sign-in
form, of a random pre-session cookie), checked on every POST.
"""

from __future__ import annotations

import base64
import hmac as std_hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SESSION_COOKIE = "ws_session"
PRE_COOKIE = "ws_pre"
SESSION_S = 8 * 3600
ROLES = ("practitioner", "dpo")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=2**14, r=8, p=1)


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    return f"scrypt${_b64(salt)}${_b64(_scrypt(salt).derive(password.encode()))}"


def check_password(stored: str, password: str) -> bool:
    try:
        kind, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        _scrypt(_unb64(salt)).verify(password.encode(), _unb64(digest))
        return True
    except (ValueError, InvalidKey):
        return False


@dataclass(frozen=True)
class User:
    username: str
    subscriber: str
    name: str
    password: str
    role: str = "practitioner"
    """``practitioner`` (the queue, concerns, chronologies, triage, alerts) or
    ``dpo`` (the data protection officer's reports only, never a child's records
    as a practitioner sees them)."""


class UserError(ValueError):
    """The users file is unusable (one line naming what)."""


def load_users(path: Path, subscribers: set[str] | None = None) -> dict[str, User]:
    """The users of ``path``; each must belong to a subscriber of the policy if given."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read users: {type(exc).__name__}") from None
    users: dict[str, User] = {}
    for i, u in enumerate(doc.get("users") or []):
        try:
            user = User(str(u["username"]), str(u["subscriber"]), str(u.get("name") or
                        u["username"]), str(u["password"]), str(u.get("role") or ROLES[0]))
        except (KeyError, TypeError):
            raise UserError(f"{path}: users[{i}]: needs username, subscriber, password") from None
        if user.role not in ROLES:
            raise UserError(f"{path}: users[{i}].role: {user.role!r} is not one of "
                            f"{', '.join(ROLES)}")
        if subscribers is not None and user.subscriber not in subscribers:
            raise UserError(f"{path}: users[{i}].subscriber: {user.subscriber!r} is not "
                            "a subscriber of the policy")
        users[user.username] = user
    return users


class Sessions:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes | None = None, lifetime_s: int = SESSION_S) -> None:
        env = os.environ.get("SAFESHARE_WORKSPACE_SECRET")
        self._secret = secret or (env.encode() if env else secrets.token_bytes(32))
        self.lifetime_s = lifetime_s

    def _mac(self, data: bytes) -> bytes:
        h = c_hmac.HMAC(self._secret, hashes.SHA256())
        h.update(data)
        return h.finalize()

    def issue(self, user: User) -> str:
        payload = json.dumps({"u": user.username, "s": user.subscriber,
                              "x": int(time.time()) + self.lifetime_s,
                              "n": secrets.token_hex(8)}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def check(self, cookie: str | None, users: dict[str, User]) -> User | None:
        """The signed-in user, or None (bad signature, expired, user gone or moved)."""
        if not cookie or "." not in cookie:
            return None
        body, mac = cookie.split(".", 1)
        try:
            payload = _unb64(body)
            if not std_hmac.compare_digest(_unb64(mac), self._mac(payload)):
                return None
            data = json.loads(payload)
        except (ValueError, TypeError):
            return None
        user = users.get(str(data.get("u")))
        if user is None or user.subscriber != data.get("s") or data.get("x", 0) < time.time():
            return None
        return user

    def csrf(self, cookie: str) -> str:
        return _b64(self._mac(b"csrf:" + cookie.encode()))

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return std_hmac.compare_digest(self.csrf(cookie), token)
