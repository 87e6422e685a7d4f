"""``safeshare acl``: Kafka ACLs from the policy, and the project's secured local broker.

::

    safeshare acl local-up                 # secure local broker + users + topics + ACLs
    eval "$(safeshare acl env admin)"      # talk to it as the admin (or any principal)
    safeshare acl show                     # the ACLs the policy implies (no cluster)
    safeshare acl apply --dry-run          # what would change on the cluster
    safeshare acl apply                    # make it so (create missing, delete stale)

Which cluster: ``--bootstrap`` / ``SAFESHARE_BOOTSTRAP`` with the
environment's credentials (``SAFESHARE_SECURITY_PROTOCOL`` ...; see
:mod:`broker.config`), else the secure local broker if it runs, as its admin.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import click

from broker.cli.common import settings


def _load_policy(path: str | None) -> Any:
    from broker.policy import Policy, PolicyError  # noqa: PLC0415

    file = Path(path) if path else settings().policy_file()
    try:
        return Policy.load(file)
    except PolicyError as exc:
        raise click.ClickException(f"policy {file} does not load: {exc}") from exc


def _local() -> Any:
    from broker.kafka.local import LocalKafka  # noqa: PLC0415

    return LocalKafka.from_settings(settings(), secure=True)


def _target(bootstrap: str | None) -> tuple[str, Any]:
    """Bootstrap and credentials of the cluster to administer (module docstring)."""
    from broker.kafka import security  # noqa: PLC0415

    if bootstrap:
        return bootstrap, security.from_settings(settings())
    local = _local()
    state = local.status()
    if state is None:
        raise click.UsageError(
            "no cluster: set SAFESHARE_BOOTSTRAP (or --bootstrap) and the admin's credentials, "
            "or start the secure local broker with `safeshare acl local-up`"
        )
    return state.bootstrap, local.credentials()


policy_option = click.option(
    "--policy", "policy_path", type=click.Path(dir_okay=False), default=None,
    help="Policy file whose agencies and subscribers get access (default: $SAFESHARE_POLICY).",
)
bootstrap_option = click.option(
    "--bootstrap", envvar="SAFESHARE_BOOTSTRAP",
    help="Kafka bootstrap servers (default: $SAFESHARE_BOOTSTRAP, else the secure local broker).",
)


@click.group(name="acl")
def acl() -> None:
    """Who may touch what on Kafka: ACLs derived from the policy, enforced by Kafka."""


@acl.command()
@policy_option
def show(policy_path: str | None) -> None:
    """Print the ACLs the policy implies, one per line (no cluster needed)."""
    from broker.kafka.acl import policy_acls  # noqa: PLC0415

    for b in sorted(policy_acls(_load_policy(policy_path), settings().topics)):
        click.echo(str(b))


@acl.command(name="apply")
@policy_option
@click.option("--dry-run", is_flag=True, help="Show the changes, make none.")
@bootstrap_option
def apply_cmd(policy_path: str | None, dry_run: bool, bootstrap: str | None) -> None:
    """Make the cluster's Safeshare ACLs match the policy: create missing, delete stale.

    Prints one line per change (``+`` create, ``-`` delete) and a summary.
    Only ACLs of Safeshare principals (agency-*, subscriber-*, router,
    checkpointer, witness, auditor, operator) on this namespace's topics,
    groups and transactional ids are touched.
    """
    from broker.kafka import acl as kacl  # noqa: PLC0415
    from broker.kafka.admin import Admin  # noqa: PLC0415

    policy = _load_policy(policy_path)
    topics = settings().topics
    addr, creds = _target(bootstrap)
    with Admin(addr, credentials=creds) as admin:
        plan = kacl.apply(admin, kacl.policy_acls(policy, topics), topics, dry_run=dry_run)
    for line in plan.lines():
        click.echo(line)
    verb = "would change" if dry_run else "applied"
    click.echo(f"{verb}: {plan.summary()} ({addr})", err=True)


@acl.command()
@policy_option
def users(policy_path: str | None) -> None:
    """Give every principal of the policy a SCRAM login on the secure local broker.

    Passwords are random, one file each (mode 0600) under the broker's
    ``security/users``; a principal that has one keeps it. Prints the files.
    """
    local = _local()
    if local.status() is None:
        raise click.UsageError("the secure local broker is not running: `safeshare acl local-up`")
    from broker.kafka.acl import policy_users  # noqa: PLC0415

    names = policy_users(_load_policy(policy_path))
    local.add_users(names)
    for n in names:
        click.echo(f"{n}\t{local.passwords.path(n)}")


@acl.command(name="local-up")
@policy_option
def local_up(policy_path: str | None) -> None:
    """Start the secure local broker (or reuse it); add users, topics and ACLs.

    The last line of output is its bootstrap address.
    """
    from broker.kafka import acl as kacl  # noqa: PLC0415
    from broker.kafka.admin import Admin  # noqa: PLC0415
    from broker.kafka.configuration import standard_topic_specs  # noqa: PLC0415

    policy = _load_policy(policy_path)
    topics = settings().topics
    local = _local()
    t0 = time.monotonic()
    state = local.start()
    local.add_users(kacl.policy_users(policy))
    with Admin(state.bootstrap, credentials=local.credentials()) as admin:
        admin.ensure_topics(standard_topic_specs(
            topics, [a.id for a in policy.agencies], [s.id for s in policy.subscribers]
        ))
        plan = kacl.apply(admin, kacl.policy_acls(policy, topics), topics)
    click.echo(
        f"secure local Kafka {state.version} ({'started' if local.started_here else 'running'}, "
        f"pid {state.pid}) in {time.monotonic() - t0:.1f} s; ACLs: {plan.summary()}; "
        f"credentials in {local.passwords.directory}",
        err=True,
    )
    click.echo(state.bootstrap)


@acl.command(name="local-down")
@click.option("--wipe", is_flag=True, help="Also delete its data, certificates and passwords.")
def local_down(wipe: bool) -> None:
    """Stop the secure local broker."""
    local = _local()
    stopped = local.stop()
    click.echo("secure local Kafka stopped" if stopped else "it was not running", err=True)
    if wipe:
        local.wipe()


@acl.command()
@click.argument("user")
def env(user: str) -> None:
    """Print shell exports that make every safeshare command log in as USER.

    For the secure local broker; USER is e.g. ``admin``, ``router`` or
    ``agency-torbay-hospital``. Use: ``eval "$(safeshare acl env router)"``.
    """
    local = _local()
    state = local.status()
    if state is None:
        raise click.UsageError("the secure local broker is not running: `safeshare acl local-up`")
    if local.passwords.get(user) is None:
        raise click.UsageError(f"no such user {user!r}: see `safeshare acl users`")
    creds = local.credentials(user)
    values = {
        "SAFESHARE_BOOTSTRAP": state.bootstrap,
        "SAFESHARE_SECURITY_PROTOCOL": creds.security_protocol,
        "SAFESHARE_SASL_MECHANISM": creds.sasl_mechanism,
        "SAFESHARE_SASL_USERNAME": user,
        "SAFESHARE_SASL_PASSWORD_FILE": str(local.passwords.path(user).resolve()),
        "SAFESHARE_SSL_CAFILE": str(local.tls.ca_cert.resolve()),
    }
    for k, v in values.items():
        click.echo(f"export {k}={shlex.quote(str(v))}")
