"""``safeshare audit refusals`` lists the gateway's REFUSED leaves (a caller that
tried to act as someone else): who, as whom, what, when, with the leaf and
checkpoint that prove it; ``verify`` counts them. Against the real broker: the
leaves are written by the gateway's own recorder, checkpointed by the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from broker.audit.keys import KeyRing
from broker.audit.verify import EventProof, verify_event_proof
from broker.cli._audit_options import iso
from broker.cli.audit import audit
from broker.gateway.consultations import Consulted, Recorder, reader_pseudonym
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.topics import Topics
from tests.helpers import create_topics, settings_for

READER_KEY = hashlib.sha256(b"test reader key").digest()


def cli(home: Path, topics: Topics, bootstrap: str, *args: str) -> Result:
    env = {"SAFESHARE_HOME": str(home), "SAFESHARE_NAMESPACE": topics.namespace,
           "SAFESHARE_BOOTSTRAP": bootstrap}
    return CliRunner().invoke(audit, list(args), env=env, catch_exceptions=False)


@pytest.mark.kafka
def test_refusals_name_who_tried_to_act_as_whom_what_and_when(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    create_topics(admin, settings_for(topics, tmp_path))
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    body = b'{"event_id": "not-an-event-of-ours"}'
    with make_producer(kafka_bootstrap, linger_ms=0) as producer:
        rec = Recorder(producer, topics, reader_key=READER_KEY)
        rec.refusal("agency:example-academy", "publish events", "agency:torbay-hospital", body)
        rec.consultation("subscriber:torbay-mash", "torbay-mash", "SAFEGUARDING",
                         [Consulted("e1", topics.feed("torbay-mash"), 0, 3)], "gateway")
        rec.refusal("user:sam", "read the feed", "subscriber:police-cse")
    ran = cli(home, topics, kafka_bootstrap, "checkpoint")
    assert ran.exit_code == 0, ran.output

    text = cli(home, topics, kafka_bootstrap, "refusals")
    assert text.exit_code == 0, text.output
    head, first, second = text.output.splitlines()
    assert head.startswith("2 refused call(s) in ") and "(log verified: 3 leaves)" in head
    assert " REFUSED agency:example-academy as agency:torbay-hospital: publish events " \
           "(FORBIDDEN) body sha256 " + hashlib.sha256(body).hexdigest() in first
    assert first.endswith("[proof: leaf 0 in checkpoint 3]")
    sam = reader_pseudonym(READER_KEY, "user:sam")
    assert f" REFUSED {sam} as subscriber:police-cse: read the feed (FORBIDDEN) [proof: leaf 2" \
           in second
    assert "sam" not in second.replace(sam, "")  # a person only as the log's pseudonym

    got = [json.loads(x) for x in cli(home, topics, kafka_bootstrap, "refusals", "--json")
           .output.splitlines()]
    assert [(g["by"], g["as"], g["action"]) for g in got] == [
        ("agency:example-academy", "agency:torbay-hospital", "publish events"),
        (sam, "subscriber:police-cse", "read the feed")]
    assert got[1]["body_sha256"] is None
    vkey = (home / "keys" / "audit-log.vkey").read_text().strip()
    for g in got:  # each proves offline, with only the log's key
        leaf = verify_event_proof(EventProof.from_json_value(g["proof"]), KeyRing([vkey]))
        assert (leaf.refused_by, iso(leaf.time_ms)) == (g["by"], g["time"])

    window = cli(home, topics, kafka_bootstrap, "refusals", "--json", "--from", got[1]["time"])
    assert [json.loads(x)["by"] for x in window.output.splitlines()] == [sam]
    verified = cli(home, topics, kafka_bootstrap, "verify")
    assert verified.exit_code == 0 and "1 consulted, 2 refused) verified" in verified.output
