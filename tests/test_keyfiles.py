"""broker.keyfiles: a process's own secret key, made once (0600) and then the
same bytes at every start; a key it cannot use stops it with one line naming
the file (a fresh key in its place would unlink every pseudonym made before)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.keyfiles import load_or_create_secret


def test_a_key_is_made_once_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "subject-pseudonym.key"
    key = load_or_create_secret(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == key
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_a_short_key_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    path.write_bytes(b"0123456789")
    with pytest.raises(ConfigError, match=r"token\.key is too short \(10 bytes, need 32\)"):
        load_or_create_secret(path)
    assert path.read_bytes() == b"0123456789"


def test_an_unreadable_or_unmakeable_key_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "reader-pseudonym.key").mkdir()  # not a file
    with pytest.raises(ConfigError, match=r"cannot read key .*reader-pseudonym\.key: "):
        load_or_create_secret(tmp_path / "reader-pseudonym.key")
    (tmp_path / "home").write_text("a file where the keys directory should be")
    with pytest.raises(ConfigError, match=r"cannot read key .*home/keys/a\.key: "):
        load_or_create_secret(tmp_path / "home" / "keys" / "a.key")
    # Absent but not makeable (as root, no permission is refused: a name whose
    # temporary file's name is over the file system's limit of 255 bytes).
    long = "k" * 240 + ".key"
    with pytest.raises(ConfigError, match=rf"cannot create key .*{long}: "):
        load_or_create_secret(tmp_path / long)
    assert set(os.listdir(tmp_path)) == {"reader-pseudonym.key", "home"}  # nothing half-made


def test_processes_starting_together_get_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "reader-pseudonym.key"
    got: list[bytes | BaseException] = []
    start = threading.Barrier(8)

    def start_up() -> None:
        start.wait()
        try:
            got.append(load_or_create_secret(path))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            got.append(exc)

    threads = [threading.Thread(target=start_up) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [path.read_bytes()] * 8
