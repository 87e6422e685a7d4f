"""Generated requests (schemathesis, from the committed OpenAPI description)
against the real gateway over HTTPS: no 5xx, and no invalid event shared.

Each operation is called by a caller the operation is for (an agency for
events and receipts, the MASH for feeds), so requests get past authentication
to the validation they are meant to test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import schemathesis.specs.openapi.schemas  # noqa: F401 - imported here, see below
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from broker.gateway.app import GatewayConfig
from broker.gateway.limits import Limits
from broker.kafka.admin import Admin
from broker.topics import Topics
from tests.gateway_helpers import Running, running_gateway
from tests.helpers import CODEC, create_topics, read_all, run_router, settings_for

# schemathesis imports its OpenAPI modules on first use, and pytest rewrites
# them (a plugin) with ast.parse. In a full run that once failed inside the
# test, with the gateway's and the router's threads running: "SystemError: AST
# constructor recursion depth mismatch", CPython gh-106905 (an error inside
# ast.parse, rare and seen in threaded programs, reported as this; fixed after
# 3.11.7). Imported above instead, at collection, while one thread runs.

pytestmark = pytest.mark.kafka
OPENAPI = Path(__file__).parent.parent / "docs" / "openapi.json"
PER_OPERATION = 205  # five operations: 1,025 requests


@pytest.fixture
def gw(kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
       ) -> Iterator[tuple[Running, Any]]:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    config = GatewayConfig(bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=policy,
                           limits=Limits(rate_per_s=10_000, burst=10_000))
    with running_gateway(config, tmp_path) as running:
        yield running, s


def _session(gw: Running, kind: str, ident: str) -> requests.Session:
    s = requests.Session()
    s.cert = gw.cert(kind, ident)
    s.verify = str(gw.ca.cert)
    return s


def _generate(op: Any, running: Running, session: requests.Session,
              calls: dict[int, int]) -> None:
    """Call ``op`` with PER_OPERATION generated requests; count the statuses."""
    stream = op.path.endswith("/stream")

    @settings(max_examples=PER_OPERATION, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def call(case: Any) -> None:
        if stream:  # a live stream ends only when asked to
            case.query = {**(case.query or {}), "limit": 1}
        response = case.call(base_url=running.url, session=session, timeout=30,
                             verify=session.verify, cert=session.cert)
        calls[response.status_code] = calls.get(response.status_code, 0) + 1
        case.validate_response(response, checks=[not_a_server_error])

    call()


def test_generated_requests_get_no_5xx_and_share_no_invalid_event(
    gw: tuple[Running, Any], kafka_bootstrap: str, topics: Topics
) -> None:
    running, s = gw
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))
    agency = _session(running, "agency", "example-academy")
    mash = _session(running, "subscriber", "torbay-mash")
    calls: dict[int, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        _generate(op, running, mash if "/feeds/" in op.path else agency, calls)
    total = sum(calls.values())
    assert total >= 1000, calls
    assert not [c for c in calls if c >= 500], calls
    # whatever reached an ingest topic is a valid event the router does not quarantine
    for agency_id in ("example-academy",):
        for r in read_all(kafka_bootstrap, topics.ingest(agency_id), timeout_s=1.0):
            CODEC.decode(r.value or b"", "safeshare.ConcernEvent")
    routed = run_router(kafka_bootstrap, s, idle_s=1.0)
    assert not [r for r in routed if r.quarantined], "an invalid event reached the router"
