"""The gateway's POST /v1/events over real HTTPS with client certificates, on the real broker."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.codec.exceptions import EncodingError
from broker.gateway.app import GatewayConfig, openapi_document
from broker.gateway.limits import Limits
from broker.gateway.pki import Principal
from broker.gateway.server import TlsFiles, server_context
from broker.gateway.tokens import OAuthClients
from broker.intake import Intake
from broker.kafka.admin import Admin
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import make_producer
from broker.topics import Topics
from tests.gateway_helpers import Running, running_gateway
from tests.helpers import CODEC, create_topics, example, read_all, settings_for, wait_for

pytestmark = pytest.mark.kafka
SCHOOL = "example-academy"


@pytest.fixture
def gw(kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path) -> Iterator[Running]:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy)
    with running_gateway(config, tmp_path) as running:
        yield running


def test_an_event_is_published_with_a_receipt_naming_the_bytes_sent(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    event = example("education_concern")
    with gw.client("agency", SCHOOL) as c:
        r = c.post("/v1/events", json=event, headers={"X-Correlation-ID": "case-42"})
    assert r.status_code == 201, r.text
    assert r.headers["x-correlation-id"] == "case-42"
    (receipt,) = r.json()["receipts"]
    assert receipt["event_id"] == event["event_id"]
    assert receipt["signed_by"] == "none"
    (record,) = read_all(kafka_bootstrap, topics.ingest(SCHOOL))
    assert (record.topic, record.partition, record.offset) == (
        receipt["topic"], receipt["partition"], receipt["offset"])
    assert hashlib.sha256(record.value or b"").hexdigest() == receipt["digest"]
    assert CODEC.decode(record.value or b"", "safeshare.ConcernEvent")["event_id"] == (
        event["event_id"])


def test_an_invalid_event_names_every_bad_field_as_publish_does_and_sends_nothing(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    event = example("education_concern")
    event["risk_level"] = "SEVERE"
    event["subject"]["local_authority"] = 7
    event["reported_at"] = "yesterday"
    with pytest.raises(EncodingError) as publish_says:
        Intake(agency=SCHOOL, codec=CODEC).encode(
            CODEC.from_json(event, "safeshare.ConcernEvent"))
    with gw.client("agency", SCHOOL) as c:
        r = c.post("/v1/events", json=event)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid"
    assert body["problems"] == list(publish_says.value.problems)
    assert len(body["problems"]) == 3
    for field in ("risk_level", "subject.local_authority", "reported_at"):
        assert any(p.startswith(field) for p in body["problems"]), field
    assert read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0) == []


def test_a_batch_with_one_bad_event_sends_none(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    bad = example("education_concern", category="NOT_A_CATEGORY")
    with gw.client("agency", SCHOOL) as c:
        r = c.post("/v1/events", json=[example("education_concern"), bad])
    assert r.status_code == 422
    assert r.json()["problems"][0].startswith("event 2: category")
    assert read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0) == []


def test_a_certificate_of_one_agency_cannot_publish_as_another(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    as_hospital = example("health_concern")
    body = json.dumps(as_hospital).encode()
    with gw.client("agency", SCHOOL) as c:
        r = c.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == (
        "agency:example-academy may not publish events as agency:torbay-hospital")
    with gw.client("subscriber", "torbay-mash") as c:
        assert c.post("/v1/events", json=example("education_concern")).status_code == 403
    assert read_all(kafka_bootstrap, topics.ingest("torbay-hospital"), timeout_s=1.0) == []
    assert read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=0.5) == []
    refusals = [json.loads(r.value or b"") for r in read_all(kafka_bootstrap,
                                                               topics.consultations)]
    assert sorted((x["kind"], x["by"], x["claimed"]) for x in refusals) == [
        ("refusal", "agency:example-academy", "agency:torbay-hospital"),
        ("refusal", "subscriber:torbay-mash", "agency:torbay-mash"),
    ]
    assert "summary" not in json.dumps(refusals)
    # ... and REFUSED leaves in the signed audit log: who, as whom, what, the
    # digest of the refused request; nothing of the event itself.
    audit = [b for r in read_all(kafka_bootstrap, topics.audit, timeout_s=0.5)
             for b in decode_batch(r.value or b"")]
    refused = sorted((AuditLeaf.from_bytes(b) for b in audit), key=lambda x: x.source_agency)
    assert [(x.kind, x.refused_by, x.source_agency, x.outcome, x.reason, x.event_id)
            for x in refused] == [
        (LeafKind.REFUSED, "agency:example-academy", "torbay-hospital", "FORBIDDEN",
         "publish events", ""),
        (LeafKind.REFUSED, "subscriber:torbay-mash", "torbay-mash", "FORBIDDEN",
         "publish events", ""),
    ]
    assert refused[0].event_digest == hashlib.sha256(body).hexdigest()
    assert not [b for b in audit if as_hospital["event_id"].encode() in b
                or as_hospital["summary"].encode() in b]


def test_without_a_certificate_or_a_token_every_call_is_401(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    ctx = ssl.create_default_context(cafile=str(gw.ca.cert))
    with httpx.Client(base_url=gw.url, verify=ctx) as c:
        r = c.post("/v1/events", json=example("education_concern"))
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
        r = c.get("/v1/feeds/torbay-mash", params={"purpose": "SAFEGUARDING"},
                  headers={"Authorization": "Bearer v1.forged.token"})
        assert r.status_code == 401
    assert read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0) == []


def test_an_oauth2_client_gets_a_token_and_acts_only_as_itself(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    policy = create_topics(admin, settings_for(topics, tmp_path))
    clients = tmp_path / "oauth-clients.json"
    client_id, secret = OAuthClients.register(clients, Principal("agency", SCHOOL))
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy,
                           oauth_clients=clients)
    with running_gateway(config, tmp_path) as gw, httpx.Client(
        base_url=gw.url, verify=ssl.create_default_context(cafile=str(gw.ca.cert)), timeout=30.0
    ) as c:
        wrong = c.post("/v1/oauth/token", data={"grant_type": "client_credentials",
                                                "client_id": client_id, "client_secret": "x"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        t = c.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                   auth=(client_id, secret))
        assert t.status_code == 200, t.text
        assert t.json()["token_type"] == "Bearer" and t.headers["cache-control"] == "no-store"
        bearer = {"Authorization": f"Bearer {t.json()['access_token']}"}
        r = c.post("/v1/events", json=example("education_concern"), headers=bearer)
        assert r.status_code == 201, r.text
        assert c.post("/v1/events", json=example("health_concern"),
                      headers=bearer).status_code == 403
    assert len(read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0)) == 1


def test_a_token_outlives_a_restart_and_each_client_id_has_its_own_rate_limit(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    policy = create_topics(admin, settings_for(topics, tmp_path))
    clients = tmp_path / "oauth-clients.json"
    a = OAuthClients.register(clients, Principal("agency", SCHOOL))
    b = OAuthClients.register(clients, Principal("agency", SCHOOL))
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy,
                           oauth_clients=clients, token_key=tmp_path / "token.key",
                           limits=Limits(rate_per_s=0.01, burst=3))

    def client(gw: Running) -> httpx.Client:
        return httpx.Client(base_url=gw.url, timeout=30.0,
                            verify=ssl.create_default_context(cafile=str(gw.ca.cert)))

    def receipt(c: httpx.Client, token: str) -> int:
        return c.get("/v1/events/nothing-yet/receipt",
                     headers={"Authorization": f"Bearer {token}"}).status_code

    with running_gateway(config, tmp_path) as gw, client(gw) as c:
        tokens = [c.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                         auth=x).json()["access_token"] for x in (a, b)]
        assert receipt(c, tokens[0]) == 404  # authenticated, nothing published
    # A new gateway process state, the same key file: the token is still good.
    with running_gateway(config, tmp_path) as gw, client(gw) as c:
        assert [receipt(c, tokens[0]) for _ in range(4)] == [404, 404, 404, 429]
        # the same agency through its other client, from the same address: its own bucket
        assert receipt(c, tokens[1]) == 404
    # Without the key file every token is refused (revoked).
    (tmp_path / "token.key").unlink()
    with running_gateway(config, tmp_path) as gw, client(gw) as c:
        assert receipt(c, tokens[1]) == 401


def test_tls_below_1_2_is_refused(gw: Running) -> None:
    tls = TlsFiles(gw.dir / "server.pem", gw.dir / "server.key", gw.ca.cert)
    assert server_context(tls).minimum_version == ssl.TLSVersion.TLSv1_2
    host, port = gw.url.removeprefix("https://").split(":")
    ctx = gw.context("agency", SCHOOL)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, int(port))) as raw, ctx.wrap_socket(
        raw, server_hostname=host
    ) as tls12:
        assert tls12.version() == "TLSv1.2"  # the oldest the gateway speaks
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1  # (the client may not offer it at all)
    with httpx.Client(base_url=gw.url, verify=ctx) as c, pytest.raises(httpx.HTTPError):
        c.get("/openapi.json")


@contextmanager
def _post_then_drop(gw: Running, body: bytes, request_id: str) -> Iterator[None]:
    """Send a POST; close the connection without reading the response on leaving."""
    host, port = gw.url.removeprefix("https://").split(":")
    ctx = gw.context("agency", SCHOOL)
    with socket.create_connection((host, int(port))) as raw, ctx.wrap_socket(
        raw, server_hostname=host
    ) as tls:
        tls.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Content-Type: application/json\r\nX-Request-ID: " + request_id.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        yield


def test_a_retry_after_a_dropped_response_creates_no_duplicate(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    event = example("education_concern")
    body = json.dumps(event).encode()
    rid = str(uuid.uuid4())
    with _post_then_drop(gw, body, rid):
        first = read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=5.0)
    assert len(first) == 1  # the gateway published; the caller never saw the receipt
    with gw.client("agency", SCHOOL) as c:
        again = c.post("/v1/events", content=body, headers={"X-Request-ID": rid,
                                                           "Content-Type": "application/json"})
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] is True
        (receipt,) = again.json()["receipts"]
        assert (receipt["partition"], receipt["offset"]) == (first[0].partition,
                                                             first[0].offset)
        # the same event under a fresh request id: still its first receipt
        third = c.post("/v1/events", json=event, headers={"X-Request-ID": "other"})
        assert third.json()["receipts"] == [receipt]
        # the same request id with another body: refused
        event2 = dict(event, summary="something else")
        conflict = c.post("/v1/events", json=event2, headers={"X-Request-ID": rid})
        assert conflict.status_code == 409
        # the same event id with other content: refused
        assert c.post("/v1/events", json=event2).status_code == 409
    assert len(read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0)) == 1


def test_the_running_service_serves_the_committed_openapi_description(gw: Running) -> None:
    committed = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert committed == openapi_document()
    with gw.client("agency", SCHOOL) as c:
        assert c.get("/openapi.json").json() == committed


def test_after_a_restart_a_retry_gets_the_same_receipt_and_nothing_is_published_twice(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy)
    event, other = example("education_concern"), example("education_concern")
    body = json.dumps([event, other]).encode()
    rid = str(uuid.uuid4())
    json_body = {"Content-Type": "application/json"}
    with running_gateway(config, tmp_path) as gw:
        with _post_then_drop(gw, body, rid):
            wait_for("both events published", lambda: len(
                read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0)) == 2)
        first = read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0)
        with gw.client("agency", SCHOOL) as c:
            lone = c.post("/v1/events", json=example("education_concern"))
            assert lone.status_code == 201, lone.text
    assert len(first) == 2  # published; the caller never saw the receipts
    # A new gateway: nothing of the first one's memory but what Kafka holds.
    with running_gateway(config, tmp_path) as gw, gw.client("agency", SCHOOL) as c:
        again = c.post("/v1/events", content=body, headers={"X-Request-ID": rid, **json_body})
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] is True
        got = again.json()["receipts"]
        where = {CODEC.decode(r.value or b"", "safeshare.ConcernEvent")["event_id"]: (
            r.partition, r.offset, hashlib.sha256(r.value or b"").hexdigest()) for r in first}
        assert [(r["event_id"], (r["partition"], r["offset"], r["digest"])) for r in got] == [
            (e["event_id"], where[e["event_id"]]) for e in (event, other)]
        assert {r["signed_by"] for r in got} == {"none"}
        # the same request id with another body: refused, after the restart too
        changed = json.dumps([dict(event, summary="something else"), other]).encode()
        conflict = c.post("/v1/events", content=changed,
                          headers={"X-Request-ID": rid, **json_body})
        assert conflict.status_code == 409, conflict.text
        # the same event under a fresh request id: its first receipt
        third = c.post("/v1/events", json=event, headers={"X-Request-ID": "fresh"})
        assert third.status_code == 200 and third.json()["receipts"] == got[:1]
        # and the receipt route knows it without the router having run
        assert c.get(f"/v1/events/{event['event_id']}/receipt").json()["published"] == got[0]
    assert len(read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0)) == 3


def test_a_send_the_broker_refuses_is_503_with_no_receipt_and_a_retry_publishes_once(
    gw: Running, kafka_bootstrap: str, topics: Topics, admin: Admin
) -> None:
    """The acknowledgement is awaited on the event loop: a record the broker
    refuses (here: over the topic's max.message.bytes) gives a 503 naming the
    error and no receipt, and the request is not remembered as done."""
    event = example("education_concern")
    body = json.dumps(event).encode()
    headers = {"X-Request-ID": str(uuid.uuid4()), "Content-Type": "application/json"}
    ingest = topics.ingest(SCHOOL)
    with gw.client("agency", SCHOOL) as c:
        assert c.post("/v1/events", json=example("education_concern")).status_code == 201
        with _max_message_bytes(admin, kafka_bootstrap, ingest, 128):
            refused = c.post("/v1/events", content=body, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "unavailable"
        assert "MessageSizeTooLarge" in refused.json()["detail"]
        assert "receipts" not in refused.json()
        assert c.get(f"/v1/events/{event['event_id']}/receipt").status_code == 404
        # kafka-python's producer sends nothing more after such a record: the
        # gateway makes a new one for the agency, so the retry goes through.
        retry = c.post("/v1/events", content=body, headers=headers)
        assert retry.status_code == 201, retry.text
        assert retry.json()["replayed"] is False
    mine = [r for r in read_all(kafka_bootstrap, ingest) if r.value != _PROBE
            and CODEC.decode(r.value or b"", "safeshare.ConcernEvent")["event_id"] == (
                event["event_id"])]
    assert len(mine) == 1
    (receipt,) = retry.json()["receipts"]
    assert (mine[0].partition, mine[0].offset) == (receipt["partition"], receipt["offset"])


_PROBE = b"probe" * 200


@contextmanager
def _max_message_bytes(admin: Admin, bootstrap: str, topic: str, limit: int) -> Iterator[None]:
    """``topic`` refuses records over ``limit`` bytes in the block (a probe waits
    for the broker to apply the change, and for it to be undone after)."""

    def probe_refused() -> bool:
        with make_producer(bootstrap) as p:
            try:
                p.send(topic, _PROBE, key=b"probe").get(timeout=10)
            except KafkaError as exc:
                assert "MessageSizeTooLarge" in str(exc), exc
                return True
            return False

    admin.alter_topic_config(topic, {"max.message.bytes": str(limit)})
    try:
        wait_for(f"{topic} refusing records over {limit} bytes", probe_refused)
        yield
    finally:
        admin.alter_topic_config(topic, {"max.message.bytes": "1048588"})
        wait_for(f"{topic} taking records again", lambda: not probe_refused())


def test_concurrent_retries_of_one_request_publish_it_once(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    """Eight clients send the same request at once: one publishes, the others
    wait for it and get its receipt (replayed), one record on the topic."""
    event = example("education_concern")
    body = json.dumps(event).encode()
    headers = {"X-Request-ID": str(uuid.uuid4()), "Content-Type": "application/json"}

    clients = [gw.client("agency", SCHOOL) for _ in range(8)]

    def post(c: httpx.Client) -> httpx.Response:
        with c:
            return c.post("/v1/events", content=body, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, clients))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({json.dumps(a.json()["receipts"]) for a in answers}) == 1
    assert len(read_all(kafka_bootstrap, topics.ingest(SCHOOL))) == 1


def test_a_bad_request_or_correlation_id_is_422_naming_each_header_and_sends_nothing(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    pattern = r"'^[\x21-\x7e]{1,128}$'"
    with gw.client("agency", SCHOOL) as c:
        r = c.post("/v1/events", json=example("education_concern"),
                   headers={"X-Request-ID": "x" * 129})
        assert r.status_code == 422, r.text
        assert r.json() == {"error": "invalid", "problems": [
            f"header x-request-id: String should match pattern {pattern}"],
            "detail": f"header x-request-id: String should match pattern {pattern}"}
        r = c.post("/v1/events", json=example("education_concern"),
                   headers={"X-Request-ID": "a b", "X-Correlation-ID": ""})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == "2 problems"
        assert [p.split(":")[0] for p in r.json()["problems"]] == [
            "header x-request-id", "header x-correlation-id"]
    with httpx.Client(base_url=gw.url,
                      verify=ssl.create_default_context(cafile=str(gw.ca.cert))) as anonymous:
        r = anonymous.post("/v1/events", json=example("education_concern"),
                           headers={"X-Request-ID": "a b"})
        assert r.status_code == 401  # who is asking comes first
    assert read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0) == []
