"""``safeshare identity link|unlink|keep-apart``: each sends its decision to the subscriber's topic.

Real Kafka; the desk behind the commands is tested with the router in
test_router_identity_decisions.py. Here: what a person at the MASH types and sees.
"""

from __future__ import annotations

from click.testing import CliRunner

from broker.api import IdentityDesk
from broker.cli.identity import identity
from broker.kafka.admin import Admin
from broker.kafka.configuration import TopicSpec
from broker.topics import Topics

MASH = "torbay-mash"


def test_link_unlink_and_keep_apart_send_one_decision_each_naming_who_decided(
    kafka_bootstrap: str, topics: Topics, admin: Admin
) -> None:
    admin.ensure_topics([TopicSpec(topics.identity_decisions(MASH), 1)])
    env = {"SAFESHARE_BOOTSTRAP": kafka_bootstrap, "SAFESHARE_NAMESPACE": topics.namespace}
    runner = CliRunner()
    common = ["--subscriber", MASH, "--by", "A Worker"]
    linked = runner.invoke(identity, ["link", "kept", "other", *common, "--review", "r1"], env=env)
    unlinked = runner.invoke(identity, ["unlink", "kept", "other", *common], env=env)
    apart = runner.invoke(identity, ["keep-apart", "kept", "other", *common, "--review", "r2"],
                          env=env)
    assert linked.exit_code == 0, linked.output
    assert unlinked.exit_code == 0, unlinked.output
    assert apart.exit_code == 0, apart.output
    with IdentityDesk(bootstrap=kafka_bootstrap, subscriber=MASH, topics=topics) as desk:
        decisions = desk.decisions()
    assert [(d["action"], d["pseudonym"], d["other_pseudonym"], d["decided_by"], d["review_id"])
            for d in decisions] == [("LINK", "kept", "other", "A Worker", "r1"),
                                    ("UNLINK", "kept", "other", "A Worker", None),
                                    ("KEEP_APART", "kept", "other", "A Worker", "r2")]
    topic = topics.identity_decisions(MASH)
    assert linked.output == f"link {decisions[0]['decision_id']} sent to {topic}\n"
    assert unlinked.output == f"unlink {decisions[1]['decision_id']} sent to {topic}\n"
    assert apart.output == f"keep-apart {decisions[2]['decision_id']} sent to {topic}\n"


def test_a_bad_subscriber_id_is_one_usage_line_naming_the_option() -> None:
    out = CliRunner().invoke(identity, ["link", "a", "b", "--subscriber", "Bad Id", "--by", "x"])
    assert out.exit_code == 2
    assert "Invalid value for --subscriber: invalid subscriber id 'Bad Id'" in out.output
