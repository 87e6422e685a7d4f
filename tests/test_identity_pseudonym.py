"""Partnership pseudonyms: keyed, versioned, rotatable, never an unkeyed hash."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from broker import config
from broker.identity.exceptions import IdentityError
from broker.identity.pseudonym import PartnershipKeys, version_of

NHS = "9434765919"


def test_the_pseudonym_is_keyed_and_names_its_key_version(tmp_path: Path) -> None:
    keys = PartnershipKeys.load(tmp_path, create=True)
    p = keys.of_nhs_number(NHS)
    assert p == keys.of_nhs_number(NHS)  # stable: one child, one pseudonym
    assert p.startswith("v1:") and version_of(p) == 1
    assert NHS not in p
    # Not any unkeyed hash of the number (which anyone could compute for all numbers).
    for algo in ("sha256", "sha1", "md5", "blake2b"):
        assert p[3:] not in hashlib.new(algo, NHS.encode()).hexdigest()
    # Another partnership's key gives another pseudonym.
    other = PartnershipKeys.load(tmp_path / "other", create=True)
    assert other.of_nhs_number(NHS) != p
    # Kinds are separated: a linkage anchor equal to an NHS number is another child.
    assert keys.pseudonym("child", NHS) != p
    assert keys.of_nhs_number("9434765870") != p


def test_key_files_are_private_and_missing_keys_fail_closed(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="no partnership pseudonym key"):
        PartnershipKeys.load(tmp_path / "none")
    PartnershipKeys.load(tmp_path / "k", create=True)
    mode = stat.S_IMODE((tmp_path / "k" / "1.key").stat().st_mode)
    assert mode == 0o600
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "1.key").write_bytes(b"x" * 8)
    with pytest.raises(IdentityError, match="shorter than 32 bytes"):
        PartnershipKeys.load(tmp_path / "short")


def test_rotation_makes_new_pseudonyms_and_maps_the_old_ones(tmp_path: Path) -> None:
    before = PartnershipKeys.load(tmp_path, create=True)
    old = before.of_nhs_number(NHS)
    anchor_old = before.pseudonym("child", "anchor-1")

    after = PartnershipKeys.rotate(tmp_path)
    assert after.current == 2
    new = after.of_nhs_number(NHS)
    assert new.startswith("v2:") and new != old
    # The old key is kept: pseudonyms subscribers already hold can be recomputed...
    assert after.pseudonym("nhs", NHS, version=1) == old
    # ...and mapped to the current ones.
    mapping = after.rotation_map([("nhs", NHS), ("child", "anchor-1")])
    assert mapping == {old: new, anchor_old: after.pseudonym("child", "anchor-1")}
    # A restarted router loads both versions and uses the newest.
    reloaded = PartnershipKeys.load(tmp_path)
    assert reloaded.current == 2 and reloaded.of_nhs_number(NHS) == new
    # Retiring v1 (deleting its file) leaves v2 pseudonyms unchanged.
    (tmp_path / "1.key").unlink()
    assert PartnershipKeys.load(tmp_path).of_nhs_number(NHS) == new
    with pytest.raises(IdentityError, match="no partnership key v1"):
        PartnershipKeys.load(tmp_path).pseudonym("nhs", NHS, version=1)


def test_the_key_directory_comes_from_configuration(tmp_path: Path) -> None:
    s = config.load({"SAFESHARE_HOME": str(tmp_path)})
    assert s.partnership_keys_dir == tmp_path / "keys" / "partnership"
    s = config.load({"SAFESHARE_PARTNERSHIP_KEYS": str(tmp_path / "elsewhere")})
    assert s.partnership_keys_dir == tmp_path / "elsewhere"


def test_version_of_refuses_what_is_not_a_partnership_pseudonym() -> None:
    assert version_of("psn-7Q2K-93XD") is None
    assert version_of("v0:" + "a" * 26) is None
    assert version_of("v12:" + "a" * 26) == 12


def test_the_cli_derives_a_pseudonym_and_rotates_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from broker.cli.identity import identity

    monkeypatch.setenv("SAFESHARE_PARTNERSHIP_KEYS", str(tmp_path / "p"))
    runner = CliRunner()
    out = runner.invoke(identity, ["pseudonym", "--nhs-number", "943 476 5919"])
    assert out.exit_code == 1 and "no partnership pseudonym key" in out.output
    assert runner.invoke(identity, ["rotate-key"]).exit_code == 0
    out = runner.invoke(identity, ["pseudonym", "--nhs-number", "943 476 5919"])
    assert out.exit_code == 0, out.output
    v1 = out.output.strip()
    assert v1 == PartnershipKeys.load(tmp_path / "p").of_nhs_number(NHS)
    out = runner.invoke(identity, ["rotate-key"])
    assert "v2 created" in out.output
    out = runner.invoke(identity, ["pseudonym", "--nhs-number", NHS, "--all-versions"])
    lines = out.output.split()
    assert lines[0] == v1 and lines[1].startswith("v2:") and len(lines) == 2
    out = runner.invoke(identity, ["pseudonym", "--nhs-number", "9434765918"])
    assert out.exit_code == 1
    assert "--nhs-number: not an NHS number" in out.output and "9434765918" not in out.output
