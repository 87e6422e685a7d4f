"""Per-caller limits of the gateway over real HTTPS: 429 with Retry-After, 413, and
the events-per-request limit; each a single clear JSON error."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.gateway.app import GatewayConfig
from broker.gateway.limits import Buckets, Limits
from broker.kafka.admin import Admin
from broker.topics import Topics
from tests.gateway_helpers import Running, running_gateway
from tests.helpers import CODEC, create_topics, example, read_all, settings_for

SCHOOL = "example-academy"


@pytest.fixture
def gw(kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path) -> Iterator[Running]:
    policy = create_topics(admin, settings_for(topics, tmp_path))
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy,
                           limits=Limits(rate_per_s=0.01, burst=3, max_body_bytes=20_000,
                                         max_events=2))
    with running_gateway(config, tmp_path) as running:
        yield running


@pytest.mark.kafka
def test_limits_answer_413_429_and_422_in_one_json_error_each(
    gw: Running, kafka_bootstrap: str, topics: Topics
) -> None:
    with gw.client("agency", SCHOOL) as c:
        big = example("education_concern", summary="x" * 30_000)
        r = c.post("/v1/events", json=big)
        assert r.status_code == 413
        assert r.json() == {"error": "too_large", "problems": [],
                            "detail": "request body over the limit of 20000 bytes"}
        r = c.post("/v1/events", json=[example("education_concern") for _ in range(3)])
        assert r.status_code == 422
        assert r.json()["problems"] == [
            "request body: 3 events, more than the limit of 2 per request"]
        r = c.post("/v1/events", json=[example("education_concern")])
        assert r.status_code == 201  # the third request of the burst
        r = c.post("/v1/events", json=example("education_concern"))
        assert r.status_code == 429
        assert r.json()["error"] == "too_many_requests"
        assert int(r.headers["retry-after"]) >= 1
    with gw.client("agency", "torbay-hospital") as other:  # the limit is per caller
        assert other.get("/openapi.json").status_code == 200
    assert len(read_all(kafka_bootstrap, topics.ingest(SCHOOL), timeout_s=1.0)) == 1


def test_a_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    b = Buckets(rate=2.0, burst=2, now=lambda: now[0])
    assert b.take("a") == 0 and b.take("a") == 0
    assert b.take("a") == pytest.approx(0.5)
    assert b.take("b") == 0
    now[0] = 0.5
    assert b.take("a") == 0


@pytest.mark.kafka
def test_a_caller_without_credentials_cannot_pick_its_address_with_x_forwarded_for(
    gw: Running,
) -> None:
    verify = ssl.create_default_context(cafile=str(gw.ca.cert))
    with httpx.Client(base_url=gw.url, verify=verify) as anonymous:
        codes = [anonymous.get("/openapi.json", headers={"X-Forwarded-For": f"10.0.0.{n}"})
                 .status_code for n in range(4)]
    assert codes == [200, 200, 200, 429]  # one bucket (burst 3): the connection's address
