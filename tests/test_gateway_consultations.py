"""Consultations are audit leaves: every feed record the gateway hands over is
first a CONSULTED leaf in the signed audit log (who, when, which record,
purpose; no content, no person's name), `safeshare audit who-saw` and the s.62
report list them, and a read whose leaf cannot be written is refused (503).
Real broker, real router, real HTTPS."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner, Result

from broker.api import Publisher
from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.cli.main import _register, cli
from broker.gateway.app import GatewayConfig
from broker.gateway.consultations import Consulted, Recorder, reader_pseudonym
from broker.kafka.admin import Admin
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import Producer, make_producer
from broker.topics import Topics
from tests.gateway_helpers import running_gateway
from tests.helpers import (
    CODEC,
    create_topics,
    example,
    publish,
    read_all,
    run_router,
    settings_for,
    wait_for,
)

MASH = "torbay-mash"


def run(home: Path, topics: Topics, bootstrap: str, *args: str) -> Result:
    _register()
    env = {"SAFESHARE_HOME": str(home), "SAFESHARE_NAMESPACE": topics.namespace,
           "SAFESHARE_BOOTSTRAP": bootstrap}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def leaves(bootstrap: str, topics: Topics) -> list[AuditLeaf]:
    return [AuditLeaf.from_bytes(b) for r in read_all(bootstrap, topics.audit)
            for b in decode_batch(r.value or b"")]


def test_each_record_read_is_a_consulted_leaf_that_who_saw_and_s62_list(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    s = settings_for(topics, home)
    policy = create_topics(admin, s)
    missing, other = example("missing_episode"), example("missing_episode")
    other["subject"]["pseudonym"] = "psn-someone-else"
    publish(kafka_bootstrap, topics, "devon-cornwall-police", missing, other)
    run_router(kafka_bootstrap, s)
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy)
    with running_gateway(config, tmp_path) as gw, gw.client("subscriber", MASH) as c:
        page = c.get(f"/v1/feeds/{MASH}", params={"purpose": "SAFEGUARDING", "wait_ms": 5000})
        assert page.status_code == 200, page.text
        got = page.json()["records"]
        assert {r["event_id"] for r in got} == {missing["event_id"], other["event_id"]}
        # Returned only after its leaves were acknowledged: they are there now.
        consulted = [x for x in leaves(kafka_bootstrap, topics) if x.kind is LeafKind.CONSULTED]
    shared = {x.event_id: x for x in leaves(kafka_bootstrap, topics)
              if x.kind is LeafKind.SHARED and x.recipient == MASH}
    assert sorted((x.event_id, x.consulted_record) for x in consulted) == sorted(
        (r["event_id"], f"{r['topic']}/{r['partition']}/{r['offset']}") for r in got)
    for x in consulted:
        assert (x.recipient, x.consulted_by, x.consulted_purpose, x.consulted_via) == (
            MASH, f"subscriber:{MASH}", "SAFEGUARDING", "page")
        assert x.source_agency == "devon-cornwall-police"
        # the digest of the copy read is the one the router shared
        assert x.event_digest == shared[x.event_id].delivered_digest
    assert missing["summary"] not in str(consulted)

    assert run(home, topics, kafka_bootstrap, "audit", "checkpoint").exit_code == 0
    r = run(home, topics, kafka_bootstrap, "audit", "who-saw", "--subject",
            missing["subject"]["pseudonym"], "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.output.splitlines()]
    reads = [x for x in lines if x["kind"] == "CONSULTED"]
    # the child's copy read, not the other child's
    assert [(x["event_id"], x["by"], x["purpose"], x["via"]) for x in reads] == [
        (missing["event_id"], f"subscriber:{MASH}", "SAFEGUARDING", "page")]
    assert reads[0]["proof"]["index"] > max(x["proof"]["index"] for x in lines
                                            if x["kind"] == "SHARED")
    text = run(home, topics, kafka_bootstrap, "audit", "who-saw", "--subject",
               missing["subject"]["pseudonym"])
    assert f"CONSULTED {MASH}'s copy read by subscriber:{MASH} for SAFEGUARDING" in text.output

    s62 = run(home, topics, kafka_bootstrap, "workspace", "report", "s62")
    assert s62.exit_code == 0, s62.output
    rows = [x for x in csv.DictReader(io.StringIO(s62.output)) if x["record"] == "consultation"]
    assert sorted(x["event_id"] for x in rows) == sorted(r["event_id"] for r in got)
    assert {(x["by"], x["party"], x["purpose_or_basis"], x["via"]) for x in rows} == {
        (f"subscriber:{MASH}", MASH, "SAFEGUARDING", "page")}


def test_a_read_whose_leaf_cannot_be_written_is_refused_and_nothing_is_shown(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police",
                   topics=topics) as p:
        p.publish_json(example("missing_episode"))
    (routed,) = run_router(kafka_bootstrap, s)
    assert MASH in routed.shared
    assert read_all(kafka_bootstrap, topics.feed(MASH))  # there is a record to read
    # The broker now refuses every audit batch (larger than the topic allows).
    admin.alter_topic_config(topics.audit, {"max.message.bytes": "64"})
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy)
    with running_gateway(config, tmp_path) as gw, gw.client("subscriber", MASH) as c:
        page = c.get(f"/v1/feeds/{MASH}", params={"purpose": "SAFEGUARDING", "wait_ms": 20000})
    assert page.status_code == 503, page.text
    assert "event_id" not in page.text and "records" not in page.json()
    assert not [x for x in leaves(kafka_bootstrap, topics) if x.kind is LeafKind.CONSULTED]


def test_a_person_is_named_in_the_log_only_by_a_keyed_pseudonym(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    create_topics(admin, settings_for(topics, tmp_path))
    key = b"r" * 32
    producer = make_producer(kafka_bootstrap, linger_ms=0)
    try:
        Recorder(producer, topics, reader_key=key).consultation(
            "user:sam.jones", MASH, "SAFEGUARDING",
            [Consulted("e1", topics.feed(MASH), 0, 7)], "workspace")
    finally:
        producer.close()
    (leaf,) = leaves(kafka_bootstrap, topics)
    assert leaf.consulted_by == reader_pseudonym(key, "user:sam.jones") != "user:sam.jones"
    assert leaf.consulted_by.startswith("user:") and "sam" not in leaf.consulted_by
    assert (leaf.consulted_via, leaf.consulted_record) == ("workspace", f"{topics.feed(MASH)}/0/7")
    assert reader_pseudonym(key, "subscriber:torbay-mash") == "subscriber:torbay-mash"


def test_a_long_read_fits_the_broker_and_a_refused_write_does_not_stop_the_next(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    """A chronology of 3,000 records read at once is 3,000 leaves: written in audit
    messages within the broker's size limit (one batch was over 1 MB: refused). A
    write the broker refuses for good puts kafka-python's producer in a fatal
    state; the recorder replaces it, so the next read is recorded again."""
    create_topics(admin, settings_for(topics, tmp_path))
    made: list[Producer] = []

    def new_producer() -> Producer:
        made.append(make_producer(kafka_bootstrap, linger_ms=0))
        return made[-1]

    rec = Recorder(new_producer(), topics, new_producer=new_producer)
    feed = topics.feed(MASH)
    try:
        rec.consultation("user:sam", MASH, "SAFEGUARDING",
                         [Consulted(f"e{i}", feed, 0, i) for i in range(3000)], "workspace")
        assert len(leaves(kafka_bootstrap, topics)) == 3000
        def recorded(event_id: str) -> bool:
            try:
                rec.consultation("user:sam", MASH, "SAFEGUARDING",
                                 [Consulted(event_id, feed, 0, 1)], "workspace")
            except KafkaError:
                return False
            return True

        admin.alter_topic_config(topics.audit, {"max.message.bytes": "64"})
        wait_for("the broker to refuse a write", lambda: not recorded("refused"), timeout_s=30)
        assert len(made) == 2  # the broken producer was replaced at once
        admin.alter_topic_config(topics.audit, {"max.message.bytes": "1048588"})
        wait_for("a write to be recorded again", lambda: recorded("after"), timeout_s=30)
    finally:
        for p in made:
            p.close()
    assert [x.event_id for x in leaves(kafka_bootstrap, topics)][-1] == "after"
