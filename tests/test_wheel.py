"""The package as an agency's integration team gets it: a wheel, installed alone.

Builds the wheel once per session, installs it into a fresh virtualenv in a
temporary directory outside the checkout (dependencies from pip's cache), and
runs the installed ``safeshare`` from there against the test broker: publish
an event, route it, read it from a subscriber's feed. Nothing of the checkout
is on the installed package's path, so a data file missing from the wheel, or
a path that only exists in a checkout, fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.topics import Topics
from tests.helpers import create_topics, example, settings_for

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh virtualenv with the built wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    assert not base.resolve().is_relative_to(ROOT)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base), str(ROOT)])
    (wheel,) = base.glob("safeshare-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)])
    return venv / "bin"


def test_the_installed_package_publishes_routes_and_reads_a_feed(
    installed: Path, kafka_bootstrap: str, topics: Topics, admin, tmp_path: Path
) -> None:
    create_topics(admin, settings_for(topics, tmp_path))
    work = tmp_path / "elsewhere"
    work.mkdir()
    # The cluster's credentials (SAFESHARE_SECURITY_PROTOCOL, ...) pass through;
    # nothing else of this process's settings does.
    keep = ("SAFESHARE_SECURITY_PROTOCOL", "SAFESHARE_SASL_", "SAFESHARE_SSL_")
    env = {k: v for k, v in os.environ.items() if k.startswith(keep)}
    env |= {
        "PATH": f"{installed}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "SAFESHARE_BOOTSTRAP": kafka_bootstrap,
        "SAFESHARE_NAMESPACE": topics.namespace,
    }

    def safeshare(*args: str) -> subprocess.CompletedProcess[str]:
        return _run([str(installed / "safeshare"), *args], env=env, cwd=work)

    where = safeshare("schemas", "fingerprints")  # the schemas travel inside the wheel
    site = _run(
        [str(installed / "python"), "-c", "import broker; print(broker.__file__)"],
        env=env, cwd=work,
    ).stdout.strip()
    assert not Path(site).resolve().is_relative_to(ROOT), site
    assert where.stdout.strip()

    # Installed there is no default policy: routing says so and names the variable.
    no_policy = subprocess.run(
        [str(installed / "safeshare"), "route", "--idle", "1"],
        env=env, cwd=work, capture_output=True, text=True, timeout=120,
    )
    assert no_policy.returncode != 0 and "SAFESHARE_POLICY" in no_policy.stderr
    example_policy = Path(site).parent / "deploy" / "policy" / "example-mash.yaml"
    env["SAFESHARE_POLICY"] = str(example_policy)

    event = example("missing_episode")
    (work / "event.json").write_text(json.dumps(event))
    receipt = json.loads(safeshare("publish", "--agency", "devon-cornwall-police", "event.json")
                         .stdout.splitlines()[-1])
    assert receipt["event_id"] == event["event_id"]
    routed = json.loads(safeshare("route", "--idle", "2").stdout.splitlines()[-1])
    assert routed["consumed"] == 1
    out = safeshare("feed", "tail", "--subscriber", "torbay-mash", "--idle", "2")
    assert [json.loads(line)["event"]["event_id"] for line in out.stdout.splitlines()] == [
        event["event_id"]
    ]
    # The state (pseudonym key, audit keys) went to the per-user data dir.
    assert (tmp_path / "home" / ".local" / "share" / "safeshare" / "keys").is_dir()
