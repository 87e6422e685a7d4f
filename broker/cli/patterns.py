"""``safeshare patterns serve``: the pattern detector (broker/patterns)."""

from __future__ import annotations

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings


@click.group("patterns")
def patterns_group() -> None:
    """The pattern detector: repeat missing, shared places, shared adults."""


@patterns_group.command("serve")
@click.option("--instance", default="patterns-0", show_default=True,
              help="Instance id (transactional id suffix); one active instance at a time.")
@bootstrap_option
def patterns_serve(instance: str, bootstrap: str | None) -> None:
    """Run the detector until SIGTERM: reads its feed, publishes PATTERN alerts."""
    import signal  # noqa: PLC0415

    from broker.codec import Codec  # noqa: PLC0415
    from broker.kafka.admin import Admin  # noqa: PLC0415
    from broker.patterns.service import PatternService, topic_specs  # noqa: PLC0415
    from broker.policy import Policy  # noqa: PLC0415

    s = settings()
    address = resolve_bootstrap(bootstrap)
    codec = Codec.from_dir(s.schemas_dir)
    policy = Policy.load(s.policy_file(), field_classes=codec.data_classes())
    admin = Admin(address)
    try:
        admin.ensure_topics(topic_specs(s.topics))
    finally:
        admin.close()
    service = PatternService(address, topics=s.topics, codec=codec,
                             thresholds=policy.pattern_thresholds, instance_id=instance)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    click.echo(f"pattern detector {instance}: reading {service.feed}", err=True)
    try:
        service.run()
    finally:
        service.close()
