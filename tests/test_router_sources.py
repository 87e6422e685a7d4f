"""The router reads the topics its policy names, on a real Kafka.

What an operator would notice: an agency onboarded after the router started
(its topics created later) is routed without a restart; a topic that looks
like an agency's but that the policy does not name is still read, and a
record on it that claims another agency is quarantined with its bytes, not
left unread; and the router asks
the broker about its own topics only, however many others the cluster holds
(a regex made it decode the whole cluster's metadata every 5 s: the latency
tail in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from broker.config import Settings
from broker.kafka.admin import Admin
from broker.kafka.configuration import TopicSpec, standard_topic_specs
from broker.kafka.producer import make_producer
from broker.policy import Policy
from broker.routing.sources import policy_topics
from broker.topics import Topics
from tests.helpers import CODEC, example, read_all, settings_for, wait_for
from tests.test_router_service import Running, feed_event_ids, publish, running  # noqa: F401


def policy_specs(topics: Topics, tmp_path: Path) -> tuple[Settings, Policy, list[TopicSpec]]:
    """Settings in ``tmp_path``, their policy, and the topics that policy implies."""
    s = settings_for(topics, tmp_path)
    policy = Policy.load(s.policy_file(), field_classes=CODEC.data_classes())
    specs = standard_topic_specs(
        topics, [a.id for a in policy.agencies], [x.id for x in policy.subscribers],
        partitions=2,
    )
    return s, policy, specs


def test_an_agency_whose_topics_appear_after_the_router_started_is_routed(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],  # noqa: F811
) -> None:
    s, policy, specs = policy_specs(topics, tmp_path)
    agencies = [a.id for a in policy.agencies]
    subscribers = [x.id for x in policy.subscribers]
    event = example("police_notification")
    agency = event["source"]["agency_id"]
    late = {topics.ingest(agency), topics.consent(agency)}
    assert late <= {t.name for t in specs}
    admin.ensure_topics([t for t in specs if t.name not in late])

    router = running(kafka_bootstrap, s)
    wait_for("the router assigned", lambda: bool(router.service._assignment()))
    consumer = router.service._consumer
    assert consumer is not None
    # Its own topics by name; the cluster's thousands of others are never asked about.
    assert set(consumer.raw.subscription()) == set(policy_topics(topics, agencies, subscribers))
    assert consumer.raw._client.cluster.need_all_topic_metadata is False

    assert not late & set(admin.list_topics())
    admin.ensure_topics([t for t in specs if t.name in late])
    publish(kafka_bootstrap, topics, [event])
    wait_for(
        "the police event routed after its topic was created",
        lambda: event["event_id"] in router.event_ids(),
        timeout_s=90,
    )
    assert event["event_id"] in feed_event_ids(kafka_bootstrap, topics, "torbay-mash")


def test_a_topic_the_policy_does_not_name_is_read_and_its_records_quarantined(
    kafka_bootstrap: str,
    topics: Topics,
    admin: Admin,
    tmp_path: Path,
    running: Callable[..., Running],  # noqa: F811
) -> None:
    s, _, specs = policy_specs(topics, tmp_path)
    rogue = topics.ingest("unlisted-agency")
    admin.ensure_topics([*specs, *standard_topic_specs(topics, ["unlisted-agency"], [])[:1]])
    body = CODEC.encode(CODEC.from_json(example("police_notification")))
    with make_producer(kafka_bootstrap) as producer:
        producer.send(rogue, body, key=str(uuid.uuid4()).encode())
        producer.flush()

    running(kafka_bootstrap, s)
    wait_for(
        "the unnamed topic's record quarantined",
        lambda: any(r.value is not None and body in r.value
                    for r in read_all(kafka_bootstrap, topics.quarantine, timeout_s=1)),
        timeout_s=90,
    )
    assert feed_event_ids(kafka_bootstrap, topics, "torbay-mash") == []
