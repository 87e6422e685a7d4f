"""Entry point of the ``safeshare`` command.

Each area owns a module here that defines a click command or group; this file
only assembles them. The CLI adds nothing the Python API (``broker.api``) lacks.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from broker.errors import SafeshareError
from broker.kafka.logs import fold_client_logs

# (module, attribute) of each sub-command; a module that is missing is an
# installation error, not something to hide.
_COMMANDS: list[tuple[str, str]] = [
    ("broker.cli.publish", "publish"),
    ("broker.cli.route", "route"),
    ("broker.cli.route", "serve"),
    ("broker.cli.feed", "feed"),
    ("broker.cli.policy", "policy"),
    ("broker.cli.schemas", "schemas"),
    ("broker.cli.audit", "audit"),
    ("broker.cli.keys", "keys"),
    ("broker.cli.identity", "identity"),
    ("broker.cli.acl", "acl"),
    ("broker.cli.loop", "ack"),
    ("broker.cli.loop", "deadlines"),
    ("broker.cli.loop", "loop_group"),
    ("broker.cli.patterns", "patterns_group"),
    ("broker.cli.gateway", "gateway"),
    ("broker.cli.workspace", "workspace"),
    ("broker.kafka.harness", "kafka_group"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="safeshare")
def cli(verbose: int) -> None:
    """Safeshare: share safeguarding concerns between agencies, lawfully, with proof."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # kafka-python's warnings are counted and folded into our own lines (one per
    # condition) rather than printed, unless debug output was asked for.
    fold_client_logs()


def _register() -> None:
    for module_name, attr in _COMMANDS:
        module = importlib.import_module(module_name)
        cli.add_command(getattr(module, attr))


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        cli.main(args=argv, prog_name="safeshare", standalone_mode=True)
    except SafeshareError as exc:  # pragma: no cover - click handles most paths
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
