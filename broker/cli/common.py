"""Shared CLI plumbing: settings, which cluster to talk to."""

from __future__ import annotations

from typing import Any

import click

from broker import config
from broker.errors import SafeshareError


class SettingRefused(click.ClickException):
    """A bad SAFESHARE_* variable: one line naming it, exit 2, and no usage text (the
    command line was fine; the environment was not)."""

    exit_code = 2


def settings() -> config.Settings:
    try:
        return config.load()
    except SafeshareError as exc:
        raise SettingRefused(str(exc)) from None


def bootstrap_option(f: Any) -> Any:
    return click.option(
        "--bootstrap",
        envvar="SAFESHARE_BOOTSTRAP",
        help="Kafka bootstrap servers (default: $SAFESHARE_BOOTSTRAP, else the local broker "
        "started by `make kafka-up`).",
    )(f)


def resolve_bootstrap(given: str | None) -> str:
    """The cluster a CLI command talks to. Never starts one implicitly."""
    if given:
        return given
    from broker.kafka.local import running_bootstrap  # noqa: PLC0415

    found = running_bootstrap(settings())
    if found:
        return found
    raise click.UsageError(
        "no Kafka cluster: set SAFESHARE_BOOTSTRAP (or --bootstrap), or start the local "
        "broker with `make kafka-up`"
    )
