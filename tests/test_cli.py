"""The ``safeshare`` command as an agency system or a MASH analyst uses it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from broker.topics import Topics
from tests.helpers import create_topics, example, read_all, run_router, safeshare, settings_for


def test_help_lists_the_commands() -> None:
    out = safeshare("--help", env={})
    assert out.returncode == 0
    for cmd in ("publish", "route", "serve", "feed", "policy", "schemas", "kafka"):
        assert cmd in out.stdout


def test_kafka_status_and_down_say_no_local_broker_runs(tmp_path: Path) -> None:
    home = {"SAFESHARE_HOME": str(tmp_path)}
    status = safeshare("kafka", "status", env=home)
    assert (status.returncode, status.stderr.strip()) == (3, "no local Kafka is running")
    down = safeshare("kafka", "down", env=home)
    assert (down.returncode, down.stderr.strip()) == (0, "no local Kafka was running")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda e: e["subject"].pop("local_authority"), "subject.local_authority"),
        (lambda e: e.update(risk_level="SEVERE"), "risk_level"),
        (lambda e: e.update(event_id="not-a-uuid"), "event_id"),
        (lambda e: e.update(reported_at="2024-11-08 22:15"), "reported_at"),
        (lambda e: e.update(colour="blue"), "colour"),
        (lambda e: e["payload"].update(episode_number_in_90_days="three"), "episode_number"),
    ],
)
def test_publish_refuses_invalid_events_naming_the_field_and_sends_nothing(
    tmp_path: Path, mutate, expected: str
) -> None:
    event = example("missing_episode")
    mutate(event)
    # No Kafka is needed to refuse: validation happens before any connection.
    out = safeshare(
        "publish",
        "--agency",
        "devon-cornwall-police",
        "-",
        env={"SAFESHARE_BOOTSTRAP": "127.0.0.1:1", "SAFESHARE_HOME": str(tmp_path)},
        stdin=json.dumps(event),
    )
    assert out.returncode != 0
    assert expected in out.stderr
    assert "nothing was sent" in out.stderr
    # Never echo the child's personal data back in an error.
    assert "Jamie" not in out.stderr


def test_publish_refuses_malformed_json_with_its_place(tmp_path: Path) -> None:
    out = safeshare(
        "publish",
        "--agency",
        "devon-cornwall-police",
        "-",
        env={"SAFESHARE_BOOTSTRAP": "127.0.0.1:1", "SAFESHARE_HOME": str(tmp_path)},
        stdin='{"event_id": \n',
    )
    assert out.returncode != 0
    assert "not valid JSON" in out.stderr


def test_publish_refuses_an_event_from_another_agency(tmp_path: Path) -> None:
    out = safeshare(
        "publish",
        "--agency",
        "torbay-hospital",
        "-",
        env={"SAFESHARE_BOOTSTRAP": "127.0.0.1:1", "SAFESHARE_HOME": str(tmp_path)},
        stdin=json.dumps(example("missing_episode")),
    )
    assert out.returncode != 0
    assert "source.agency_id" in out.stderr


@pytest.mark.kafka
def test_publish_route_and_tail_a_feed(
    kafka_bootstrap: str, topics: Topics, admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    env = {
        "SAFESHARE_BOOTSTRAP": kafka_bootstrap,
        "SAFESHARE_NAMESPACE": topics.namespace,
        "SAFESHARE_HOME": str(tmp_path),
    }
    events = tmp_path / "events.jsonl"
    first, second = example("missing_episode"), example("missing_episode")
    events.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    out = safeshare("publish", "--agency", "devon-cornwall-police", str(events), env=env)
    assert out.returncode == 0, out.stderr
    receipts = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["event_id"] for r in receipts] == [first["event_id"], second["event_id"]]
    assert all(r["topic"] == topics.ingest("devon-cornwall-police") for r in receipts)

    out = safeshare("route", "--idle", "2", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["consumed"] == 2

    out = safeshare("feed", "tail", "--subscriber", "torbay-mash", "--idle", "2", env=env)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["event"]["event_id"] for x in lines] == [first["event_id"], second["event_id"]]
    assert lines[0]["at"].startswith(topics.feed("torbay-mash"))
    assert lines[0]["decision"]["subscriber"] == "torbay-mash"


@pytest.mark.kafka
def test_route_keeps_going_past_garbage(
    kafka_bootstrap: str, topics: Topics, admin, tmp_path: Path
) -> None:
    from broker.api import Publisher
    from broker.kafka.producer import make_producer

    s = settings_for(topics, tmp_path)
    create_topics(admin, s)
    p = make_producer(kafka_bootstrap)
    p.send(topics.ingest("devon-cornwall-police"), b"junk")
    p.flush()
    p.close()
    good = example("missing_episode")
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police", topics=topics) as pub:
        pub.publish_json(good)
    routed = run_router(kafka_bootstrap, s)
    assert sorted(r.quarantined or "" for r in routed) == ["", "UNDECODABLE"]
    assert len(read_all(kafka_bootstrap, topics.feed("torbay-mash"))) == 1


def test_a_fenced_router_exits_with_status_3_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The fencing itself is proven on a real broker in test_router_service; here:
    # what the command tells a supervisor when its service reports being fenced.
    from click.testing import CliRunner  # noqa: PLC0415

    import broker.routing.app as app  # noqa: PLC0415
    from broker.cli.main import _register, cli  # noqa: PLC0415
    from broker.routing.service import RouterStats  # noqa: PLC0415

    class Fenced:
        metrics_port = 0

        def stop(self) -> None:
            pass

        def run(self, **_: object) -> RouterStats:
            return RouterStats(consumed=4, transactions=1, fenced=True)

    _register()
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # not in the test process
    monkeypatch.setattr(app, "build_service", lambda *a, **k: Fenced())
    monkeypatch.setattr(app, "settle_memory", lambda: None)
    monkeypatch.setenv("SAFESHARE_HOME", str(tmp_path))
    monkeypatch.setenv("SAFESHARE_BOOTSTRAP", "127.0.0.1:9")
    for args in (["route", "--idle", "1"], ["serve", "--metrics-port", "0"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 3, (args, result.output)
        assert "fenced by another process" in result.output
    summary = CliRunner().invoke(cli, ["route", "--idle", "1"]).output.splitlines()[0]
    assert json.loads(summary)["fenced"] is True
