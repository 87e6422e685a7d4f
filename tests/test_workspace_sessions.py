"""Workspace sign-in pieces without Kafka: password hashes, signed session
cookies (tampering, expiry, a user moved to another subscriber) and CSRF tokens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from broker.workspace.sessions import (
    Sessions,
    User,
    UserError,
    check_password,
    hash_password,
    load_users,
)


def test_password_hash_checks_only_the_password() -> None:
    stored = hash_password("s3cret words")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert check_password(stored, "s3cret words")
    assert not check_password(stored, "s3cret word")
    assert not check_password("plain", "plain")


def test_session_cookie_is_refused_when_tampered_expired_or_moved() -> None:
    user = User("sam", "torbay-mash", "Sam", hash_password("x"))
    users = {"sam": user}
    s = Sessions(b"k" * 32)
    cookie = s.issue(user)
    assert s.check(cookie, users) == user
    body, mac = cookie.split(".")
    assert s.check(body[:-2] + "AA." + mac, users) is None
    assert Sessions(b"other" * 8).check(cookie, users) is None
    assert s.check(cookie, {"sam": replace(user, subscriber="torbay-csc")}) is None
    assert Sessions(b"k" * 32, lifetime_s=-1).check(
        Sessions(b"k" * 32, lifetime_s=-1).issue(user), users) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    s = Sessions(b"k" * 32)
    assert s.csrf_ok("a.b", s.csrf("a.b"))
    assert not s.csrf_ok("a.c", s.csrf("a.b"))
    assert not s.csrf_ok("a.b", None)


def test_users_file_names_the_bad_entry(tmp_path: Path) -> None:
    f = tmp_path / "users.yaml"
    f.write_text("users:\n  - {username: sam, subscriber: nobody, password: 'scrypt$a$b'}\n")
    with pytest.raises(UserError, match=r"users\[0\]\.subscriber: 'nobody'"):
        load_users(f, {"torbay-mash"})
    f.write_text("users:\n  - {username: sam}\n")
    with pytest.raises(UserError, match=r"users\[0\]: needs"):
        load_users(f)


def test_serve_refuses_plain_http_off_loopback_and_a_user_of_no_subscriber(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from broker.cli.main import _register, cli

    _register()

    users = tmp_path / "users.yaml"
    users.write_text("users:\n  - {username: sam, subscriber: nobody, password: 'scrypt$a$b'}\n")
    r = CliRunner().invoke(cli, ["workspace", "serve", "--users", str(users), "--http",
                                 "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--http: only on a loopback address" in r.output
    r = CliRunner().invoke(cli, ["workspace", "serve", "--users", str(users), "--http"])
    assert r.exit_code == 2 and "users[0].subscriber: 'nobody'" in r.output
