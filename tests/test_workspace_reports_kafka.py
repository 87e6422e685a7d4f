"""The DPO's reports from the real log: events routed by the real router on the
broker, checkpointed, then `safeshare workspace report subject-access` (HTML,
PDF, proofs that `safeshare audit verify-proof` accepts), `s62` and
`checkpoints` through the CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from click.testing import CliRunner, Result

from broker.cli.main import _register, cli
from broker.kafka.admin import Admin
from broker.topics import Topics
from tests.helpers import create_topics, example, publish, run_router, settings_for


def run(home: Path, topics: Topics, bootstrap: str, *args: str) -> Result:
    _register()
    env = {"SAFESHARE_HOME": str(home), "SAFESHARE_NAMESPACE": topics.namespace,
           "SAFESHARE_BOOTSTRAP": bootstrap}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_subject_access_s62_and_checkpoints_from_the_routed_log(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    s = settings_for(topics, home)
    policy = create_topics(admin, s)
    missing = example("missing_episode", risk_level="CRITICAL")
    missing["sharing"]["break_glass"] = True
    health = example("health_concern")
    publish(kafka_bootstrap, topics, "devon-cornwall-police", missing)
    publish(kafka_bootstrap, topics, "torbay-hospital", health)
    run_router(kafka_bootstrap, s)
    assert run(home, topics, kafka_bootstrap, "audit", "checkpoint").exit_code == 0

    psn = missing["subject"]["pseudonym"]
    html, pdf, proofs = tmp_path / "sar.html", tmp_path / "sar.pdf", tmp_path / "proofs.json"
    r = run(home, topics, kafka_bootstrap, "workspace", "report", "subject-access",
            "--subject", psn, "--out", str(html), "--pdf", str(pdf), "--proofs", str(proofs))
    assert r.exit_code == 0, r.output
    text = html.read_text()
    assert "verified:" in text and missing["event_id"] in text and health["event_id"] in text
    assert "torbay-mash" in text and "example-academy-dsl" in text
    assert "break-glass (review within 72 h)" in text  # the emergency share, not reviewed yet
    assert "no review recorded" in text
    assert "WITHHELD" in text  # the school never receives health
    assert pdf.read_bytes().startswith(b"%PDF-")
    ok = run(home, topics, kafka_bootstrap, "audit", "verify-proof", str(proofs))
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("OK leaf") == text.count(" in checkpoint ")
    assert text.count(" in checkpoint ") == 2 * len(policy.subscribers)  # one per subscriber

    s62 = run(home, topics, kafka_bootstrap, "workspace", "report", "s62")
    assert s62.exit_code == 0, s62.output
    rows = list(csv.DictReader(io.StringIO(s62.output)))
    disclosed = {(r["record"], r["party"]) for r in rows if r["event_id"] == missing["event_id"]}
    assert ("disclosure", "torbay-mash") in disclosed
    assert not any(r["event_id"] == health["event_id"] for r in rows)  # not police data

    cps = run(home, topics, kafka_bootstrap, "workspace", "report", "checkpoints")
    assert cps.exit_code == 0 and "verified:" in cps.output
