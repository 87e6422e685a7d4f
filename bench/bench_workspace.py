"""Workspace page times: a child's chronology of 500 events, p95 (aim < 200 ms), and
the identity review page.

Chronology, two figures: the whole request (``GET /workspace/children/{pseudonym}`` over
HTTP from a signed-in keep-alive client, through uvicorn, including the
consultation record written to Kafka with acks=all before the page is sent),
and the rendering alone (each record's view and the template), in process.
The 500 records are real FeedRecords (encoded and decoded by the codec) put in
the subscriber's store directly. Identity reviews: ``GET /workspace/identity``
with ``--reviews`` items on the team's desk (``--answered`` of them decided) and
``--feed`` more records in its store, each load reading the desk's topics from
the start. Prints figures and ``BENCH {json}`` lines.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn

from broker import config
from broker.codec import Codec
from broker.gateway.app import GatewayConfig, create_app
from broker.identity.desk import DECISION, REVIEW_ITEM
from broker.kafka.admin import Admin
from broker.kafka.configuration import standard_topic_specs
from broker.kafka.producer import make_producer
from broker.policy import Policy
from broker.topics import Topics
from broker.workspace import WorkspaceConfig
from broker.workspace.sessions import User, hash_password

FEED_RECORD = "safeshare.FeedRecord"
PSN = "psn-BENCH-0500"
PASSWORD = "bench password, not a secret"
SUBSCRIBER = "torbay-mash"


def report(name: str, value: float, unit: str) -> None:
    print(f"{name}: {value:.2f} {unit}")
    print("BENCH " + json.dumps({"name": name, "value": round(value, 2), "unit": unit}))


def records(codec: Codec, n: int) -> list[dict[str, Any]]:
    """``n`` FeedRecords about one child, as the feed reader decodes them."""
    base = json.loads((config.load().schemas_dir.parent / "tests" / "data" / "events" /
                       "missing_episode.json").read_text())
    out = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        ev = json.loads(json.dumps(base))
        ev["event_id"] = str(uuid.uuid4())
        ev["subject"]["pseudonym"] = PSN
        t = (start + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        ev["occurred_at"] = ev["reported_at"] = t
        decision = {"subscriber": SUBSCRIBER, "rule_id": "mash-sees-all-concerns",
                    "lawful_basis": "UK GDPR Art 6(1)(e)", "policy_digest": "0" * 64,
                    "data_classes_shared": ["pseudonym", "identity", "concern_summary"],
                    "fields_redacted": ["payload.MissingEpisode.found.place",
                                        "reporter.name", "reporter.contact"],
                    "obligations": [], "decided_at": 1_767_225_600_000 + i}
        rec = {"decision": decision, "event": codec.from_json(ev)}
        out.append(codec.decode(codec.encode(rec, FEED_RECORD), FEED_RECORD))
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def desk_records(bootstrap: str, topics: Topics, codec: Codec, reviews: int,
                 answered: int) -> None:
    """``reviews`` review items on the team's desk, the first ``answered`` decided."""
    with make_producer(bootstrap, linger_ms=5) as p:
        for i in range(reviews):
            p.send(topics.identity_reviews(SUBSCRIBER), codec.encode({
                "review_id": f"r{i}", "event_id": f"e{i}", "source_agency": "torbay-hospital",
                "provisional": f"prov{i}", "candidate": f"cand{i}", "match_probability": 0.5,
                "raised_at": 1_767_225_600_000 + i}, REVIEW_ITEM), key=f"r{i}".encode())
        for i in range(answered):
            p.send(topics.identity_decisions(SUBSCRIBER), codec.encode({
                "decision_id": str(uuid.uuid4()), "subscriber_id": SUBSCRIBER,
                "action": "KEEP_APART", "pseudonym": f"cand{i}", "other_pseudonym": f"prov{i}",
                "decided_by": "bench", "review_id": f"r{i}", "decided_at": 1_767_225_600_000,
            }, DECISION), key=f"cand{i}".encode())
        p.flush()


def identity_page(client: httpx.Client, url: str, requests: int, open_items: int) -> list[float]:
    """Times of ``requests`` loads of the identity review page, in ms."""
    first = client.get(f"{url}/identity")
    assert first.status_code == 200, first.status_code
    assert first.text.count("data-review=") == open_items
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        assert client.get(f"{url}/identity").status_code == 200
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--reviews", type=int, default=300, help="identity review items")
    ap.add_argument("--answered", type=int, default=100, help="of them decided already")
    ap.add_argument("--feed", type=int, default=10_000, help="more records in the store")
    args = ap.parse_args(list(argv or []))
    from broker.kafka.cluster import obtain_cluster  # noqa: PLC0415

    base = config.load()
    codec = Codec.from_dir(base.schemas_dir)
    with obtain_cluster(base) as cluster:
        topics = Topics(namespace=f"bws{uuid.uuid4().hex[:8]}")
        policy = Policy.load(base.policy_file(), field_classes=codec.data_classes())
        with Admin(cluster.bootstrap) as admin:
            admin.ensure_topics(standard_topic_specs(
                topics, [a.id for a in policy.agencies], [x.id for x in policy.subscribers]))
        users = {"sam": User("sam", SUBSCRIBER, "Sam", hash_password(PASSWORD))}
        app = create_app(GatewayConfig(
            bootstrap=cluster.bootstrap, topics=topics, codec=codec, policy=policy,
            workspace=WorkspaceConfig(users=users, bootstrap=cluster.bootstrap, topics=topics,
                                      policy=policy)))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.05)
            ws = app.state.workspace
            store = ws.store(SUBSCRIBER)
            store.add_records([(topics.feed(SUBSCRIBER), 0, i, r)
                               for i, r in enumerate(records(codec, args.events))])
            url = f"http://127.0.0.1:{port}/workspace"
            with httpx.Client(timeout=30) as client:
                page = client.get(f"{url}/signin").text
                token = re.search(r'name="csrf" value="([^"]+)"', page)
                assert token is not None
                client.post(f"{url}/signin", data={"csrf": token.group(1), "username": "sam",
                                                   "password": PASSWORD})
                first = client.get(f"{url}/children/{PSN}")
                assert first.status_code == 200, first.status_code
                assert first.text.count('<li class="card">') == args.events
                times = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    r = client.get(f"{url}/children/{PSN}")
                    times.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200
            print(f"chronology of {args.events} events, {len(first.content) // 1024} KiB, "
                  f"{args.requests} requests")
            report(f"workspace chronology {args.events} p50", statistics.median(times), "ms")
            report(f"workspace chronology {args.events} p95", pct(times, 95), "ms")
            user = users["sam"]
            render = []
            for _ in range(max(10, args.requests // 4)):
                t0 = time.perf_counter()
                views = [ws.view(e, user, fields=False) for e in store.chronology(PSN)]
                ws.render("chronology.html", user=user, pseudonym=PSN, purpose="SAFEGUARDING",
                          events=views, csrf="x")
                render.append((time.perf_counter() - t0) * 1000)
            report(f"workspace chronology {args.events} render only p95", pct(render, 95), "ms")

            desk_records(cluster.bootstrap, topics, codec, args.reviews, args.answered)
            store.add_records([(topics.feed(SUBSCRIBER), 1, i, {
                "event": {"event_id": f"f{i}", "risk_level": "LOW",
                          "subject": {"pseudonym": f"cand{i}" if i % 2 else f"other{i}"}},
                "decision": {}}) for i in range(args.feed)])
            with httpx.Client(timeout=60, cookies=client.cookies) as client2:
                idn = identity_page(client2, url, max(5, args.requests // 10),
                                    args.reviews - args.answered)
            print(f"identity reviews: {args.reviews} items ({args.answered} answered), "
                  f"{args.events + args.feed} records in the store")
            report(f"workspace identity {args.reviews} p50", statistics.median(idn), "ms")
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            with Admin(cluster.bootstrap) as admin:
                admin.delete_topics([t for t in admin.list_topics()
                                     if t.startswith(topics.namespace + ".")])
