"""The gateway's own Kafka principal under the secured broker's ACLs (SASL/SCRAM
over TLS, exactly as `safeshare acl apply` sets them): it writes the ingest and
consent topics of the agencies it serves, acknowledgements, status notices, its
consultations and audit leaves, reads feeds, ingest (idempotency) and the log;
and it can do nothing else asked of it here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from broker.gateway.local import LocalGateway, free_port
from broker.gateway.pki import CaFiles, make_ca
from broker.kafka import acl
from broker.kafka.consumer import make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import make_producer
from broker.kafka.structs import TopicPartition
from tests.helpers import CODEC, example, wait_for
from tests.secured import EXAMPLE, Secured

pytestmark = pytest.mark.kafka
DENIED_S = 10.0
AGENCY, SUBSCRIBER = "example-academy", "torbay-mash"


def _write(env: Secured, topic: str) -> None:
    with make_producer(env.bootstrap, credentials=env.creds(acl.GATEWAY),
                       max_block_ms=int(DENIED_S * 1000)) as p:
        p.send(topic, b"gateway-acl-test", key=b"k").get(timeout=DENIED_S)


def _read(env: Secured, topic: str) -> None:
    with make_consumer(env.bootstrap, group_id=None, credentials=env.creds(acl.GATEWAY)) as c:
        c.assign([TopicPartition(topic, 0)])
        c.collect(1, timeout_s=2.0)  # raises if not authorised; empty is fine


def test_the_gateway_principal_may_do_its_work_and_no_more(secured: Secured) -> None:
    t = secured.topics
    for topic in (t.ingest(AGENCY), t.consent(AGENCY), t.status(AGENCY), t.acks(SUBSCRIBER),
                  t.consultations, t.audit):
        _write(secured, topic)
    # ... and the workspace it serves reads the clocks, the acknowledgements and
    # the consultations topic (time left, triage after a restart, the s.62 export)
    for topic in (t.feed(SUBSCRIBER), t.ingest(AGENCY), t.audit, t.audit_checkpoints,
                  t.clocks, t.acks(SUBSCRIBER), t.consultations):
        _read(secured, topic)

    for topic in (t.feed(SUBSCRIBER), t.quarantine, t.clocks, t.clock_starts,
                  t.audit_checkpoints, t.notices(SUBSCRIBER), t.identity):
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            _write(secured, topic)
    for topic in (t.quarantine, t.notices(SUBSCRIBER), t.status(AGENCY),
                  t.consent(AGENCY), t.clock_starts, t.identity):
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            _read(secured, topic)
    # A group other than the workspace's feed tails (the subscriber's own, say).
    with make_consumer(secured.bootstrap, group_id=t.feed_group(SUBSCRIBER),
                       credentials=secured.creds(acl.GATEWAY),
                       topics=[t.feed(SUBSCRIBER)]) as c, pytest.raises(
            KafkaError, match="GroupAuthorizationFailed"):
        c.collect(1, timeout_s=DENIED_S)


def test_the_gateway_serves_as_its_own_principal_across_a_restart(
    secured: Secured, tmp_path: Path
) -> None:
    """`safeshare gateway serve` logged in as User:gateway: publishes for an agency,
    reads a feed, writes an acknowledgement, and after a restart rebuilds its
    idempotency memory from the ingest topic (a retry is replayed)."""
    t = secured.topics
    creds = secured.creds(acl.GATEWAY)
    password = tmp_path / "gateway.password"
    password.write_text(creds.password or "")
    home = tmp_path / "home"
    ca = CaFiles(home / "gateway" / "ca")
    make_ca(ca)
    env = {**os.environ, "SAFESHARE_HOME": str(home), "SAFESHARE_NAMESPACE": t.namespace,
           "SAFESHARE_BOOTSTRAP": secured.bootstrap, "SAFESHARE_SECURITY_PROTOCOL": "SASL_SSL",
           "SAFESHARE_SASL_USERNAME": acl.GATEWAY, "SAFESHARE_SASL_PASSWORD_FILE": str(password),
           "SAFESHARE_SSL_CAFILE": str(creds.ssl_cafile), "SAFESHARE_POLICY": str(EXAMPLE)}
    event = example("education_concern")
    body = json.dumps(event).encode()
    headers = {"X-Request-ID": "acl-retry", "Content-Type": "application/json"}
    with _serving(env, home, ca) as gw, gw.client("agency", AGENCY) as c:
        first = c.post("/v1/events", content=body, headers=headers)
        assert first.status_code == 201, first.text
    with _serving(env, home, ca) as gw:
        with gw.client("agency", AGENCY) as c:
            again = c.post("/v1/events", content=body, headers=headers)
            assert again.status_code == 200, again.text
            assert again.json()["receipts"] == first.json()["receipts"]
        with gw.client("subscriber", SUBSCRIBER) as c:
            page = c.get(f"/v1/feeds/{SUBSCRIBER}", params={"purpose": "SAFEGUARDING"})
            assert page.status_code == 200, page.text
            ack = c.post(f"/v1/feeds/{SUBSCRIBER}/acks", json={
                "event_id": event["event_id"], "kind": "RECEIPT", "actor": "sw-1"})
            assert ack.status_code == 201, ack.text
    with make_consumer(secured.bootstrap, group_id=None, credentials=secured.local.credentials(),
                       topics=[t.ingest(AGENCY)]) as consumer:
        events = [r.value for r in consumer.collect(10_000, timeout_s=5.0)
                  if (r.value or b"").startswith(b"\xc3\x01")]  # not the first test's bytes
    mine = [v for v in events
            if CODEC.decode(v or b"", "safeshare.ConcernEvent")["event_id"] == event["event_id"]]
    assert len(mine) == 1  # published once, as the gateway


@contextmanager
def _serving(env: dict[str, str], home: Path, ca: CaFiles) -> Iterator[LocalGateway]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli.main", "gateway", "serve",
                             "--port", str(port)], env=env)
    gw = LocalGateway(f"https://127.0.0.1:{port}", ca, home / "gateway")
    try:
        def up() -> bool:
            assert proc.poll() is None, "the gateway exited"
            try:
                with gw.client("agency", AGENCY) as c:
                    return c.get("/openapi.json").status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the gateway listening", up, timeout_s=60)
        yield gw
    finally:
        proc.terminate()
        proc.wait(timeout=30)
