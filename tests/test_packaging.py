"""Where the package finds its data files and keeps its state, checkout or installed.

The installed half is simulated: no checkout (``resources.CHECKOUT = None``) and
the package's data where a wheel puts it, beside the code (here: the checkout's
top level stands in for the package directory). ``test_wheel.py`` installs a
real wheel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import config, resources
from broker.errors import ConfigError


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """As if run from an installed package: no checkout; HOME is ``tmp_path``."""
    monkeypatch.setattr(resources, "CHECKOUT", None)
    monkeypatch.setattr(resources, "files", lambda package: config.PROJECT_ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_checkout_reads_its_own_schemas_and_keeps_state_in_var() -> None:
    assert resources.CHECKOUT == config.PROJECT_ROOT
    assert resources.path("schemas") == config.PROJECT_ROOT / "schemas"
    s = config.load({})
    assert s.home == config.PROJECT_ROOT / "var"
    assert s.policy_file() == config.PROJECT_ROOT / "deploy" / "policy" / "example-mash.yaml"


def test_installed_data_files_are_read_from_the_package(installed: Path) -> None:
    assert config.load({}).schemas_dir == config.PROJECT_ROOT / "schemas"


def test_installed_state_goes_to_the_xdg_data_dir(installed: Path) -> None:
    assert config.load({}).home == installed / ".local" / "share" / "safeshare"
    assert config.load({"XDG_DATA_HOME": "/srv/data"}).home == Path("/srv/data/safeshare")
    # The XDG spec: a relative path is invalid and ignored.
    assert config.load({"XDG_DATA_HOME": "rel"}).home == installed / ".local/share/safeshare"


def test_safeshare_home_overrides_either_default(installed: Path) -> None:
    assert config.load({"SAFESHARE_HOME": "/srv/ss"}).home == Path("/srv/ss")


def test_installed_without_safeshare_policy_names_the_variable(installed: Path) -> None:
    s = config.load({})
    assert s.policy_path is None
    with pytest.raises(ConfigError, match="set SAFESHARE_POLICY"):
        s.policy_file()
    given = config.load({"SAFESHARE_POLICY": "/etc/safeshare/policy.yaml"})
    assert given.policy_file() == Path("/etc/safeshare/policy.yaml")


def test_a_data_file_missing_from_an_install_is_one_clear_error(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "files", lambda package: installed / "broker")
    with pytest.raises(ConfigError, match="installation is incomplete"):
        resources.path("schemas")
