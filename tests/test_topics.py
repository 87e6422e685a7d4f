"""Topic names: every per-agency or per-subscriber topic names its owner back (no Kafka)."""

from __future__ import annotations

import re

from broker.topics import Topics

T = Topics("unit")


def test_each_owned_topic_names_its_owner_and_no_other_topic_does() -> None:
    owners = [(T.ingest, T.agency_of_ingest), (T.consent, T.agency_of_consent),
              (T.identity_decisions, T.subscriber_of_identity_decisions),
              (T.acks, T.subscriber_of_acks)]
    for topic_of, owner_of in owners:
        assert owner_of(topic_of("torbay-mash")) == "torbay-mash"
        assert owner_of(T.feed("torbay-mash")) is None
        assert owner_of(Topics("other").ingest("torbay-mash")) is None
        assert owner_of(topic_of("torbay-mash").replace("unit.", "unit-x.")) is None


def test_subscription_patterns_match_owned_topics_only() -> None:
    for pattern, topic_of in ((T.ingest_pattern, T.ingest), (T.ack_pattern, T.acks)):
        assert re.match(pattern, topic_of("devon-cornwall-police"))
        assert not re.match(pattern, T.feed("devon-cornwall-police"))
        assert not re.match(pattern, topic_of("a") + ".extra")
        assert not re.match(pattern, Topics("unitx").ingest("a"))
