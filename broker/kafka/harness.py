"""``safeshare kafka up|down|status|fetch``: the local broker from a shell.

``make kafka-up`` leaves a broker running for a whole working session, so test
runs reuse it instead of paying the JVM start each time; ``make kafka-down``
stops it from any shell. Messages go to stderr; ``up`` prints the bootstrap
address as the last line of stdout, so scripts can do
``export SAFESHARE_BOOTSTRAP=$(safeshare kafka up | tail -n1)``.

The same group (:data:`kafka_group`) is mounted in the ``safeshare`` command and
runs alone as ``python -m broker.kafka`` (what the Makefile uses). It works from
an installed package: the pom and log4j2 configuration are package data, and the
jars and data go to the state directory (:mod:`broker.config`).

Exit codes: 0 success; 1 a Kafka error (one line on stderr); ``status`` exits 3
when no broker runs.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from broker import config
from broker.kafka.exceptions import KafkaError
from broker.kafka.local import LocalKafka, probe_broker


def _local() -> LocalKafka:
    return LocalKafka.from_settings(config.load())


def _one_line_errors(command: Callable[..., None]) -> Callable[..., None]:
    """A Kafka error ends the command with its message and exit 1, not a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except KafkaError as exc:
            raise click.ClickException(str(exc)) from exc

    return run


@click.group("kafka", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
def kafka_group(verbose: int) -> None:
    """The project's own single-node Kafka (KRaft, jars from Maven Central)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if verbose < 2:
        # kafka-python's own log lines are for debugging kafka-python.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


@kafka_group.command()
@_one_line_errors
def up() -> None:
    """Start the local broker (or reuse the running one); print its bootstrap last.

    With SAFESHARE_BOOTSTRAP set nothing is started: that cluster is checked
    and its address printed, so callers need not care which one they got.
    """
    settings = config.load()
    if settings.bootstrap:
        why = probe_broker(settings.bootstrap, 30.0, security_protocol=settings.security_protocol)
        if why is not None:
            raise click.ClickException(f"SAFESHARE_BOOTSTRAP={settings.bootstrap}: {why}")
        click.echo(f"using external cluster SAFESHARE_BOOTSTRAP={settings.bootstrap}", err=True)
        click.echo(settings.bootstrap)
        return
    local = LocalKafka.from_settings(settings)
    t0 = time.monotonic()
    state = local.start()
    how = "started" if local.started_here else "already running"
    click.echo(
        f"local Kafka {state.version} {how} in {time.monotonic() - t0:.1f} s: pid {state.pid}, "
        f"data {local.data_dir}, log {local.logs_dir / 'server.log'}",
        err=True,
    )
    click.echo(state.bootstrap)


@kafka_group.command()
@click.option("--wipe", is_flag=True, help="Also delete the broker's data, logs and ports.")
@_one_line_errors
def down(wipe: bool) -> None:
    """Stop the local broker (no-op if none runs)."""
    local = _local()
    stopped = local.stop()
    click.echo("local Kafka stopped" if stopped else "no local Kafka was running", err=True)
    if wipe:
        local.wipe()
        click.echo(f"wiped {local.instance_dir}", err=True)


@kafka_group.command()
@_one_line_errors
def status() -> None:
    """Print the running broker's state as JSON (exit 3 if none runs)."""
    local = _local()
    state = local.status()
    if state is None:
        click.echo("no local Kafka is running", err=True)
        sys.exit(3)
    why = probe_broker(state.bootstrap, 5.0)
    info = json.loads(state.to_json())
    info["answers"] = why is None
    if why is not None:
        info["problem"] = why
    click.echo(json.dumps(info, indent=2, sort_keys=True))


@kafka_group.command()
@_one_line_errors
def fetch() -> None:
    """Fetch the Kafka jars with Maven (no-op if cached); print the libs dir."""
    local = _local()
    t0 = time.monotonic()
    cached = local.is_fetched()
    libs = local.fetch()
    click.echo(
        f"Kafka {local.version} jars {'cached' if cached else 'fetched'} "
        f"({time.monotonic() - t0:.1f} s)",
        err=True,
    )
    click.echo(str(libs))


def main(argv: list[str] | None = None) -> None:
    """``python -m broker.kafka``: the group alone (errors: one line, exit 1)."""
    try:
        kafka_group.main(args=argv, prog_name="python -m broker.kafka", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
