"""``safeshare workspace``: the practitioners' pages (serve, hash-password).

``serve`` runs the gateway's application with the workspace mounted, for
browsers: HTTPS with the gateway's server certificate but no client
certificate (the ``/v1`` API then answers 401 on this listener; agencies use
``safeshare gateway serve``), or plain HTTP on a loopback address only with
``--http`` (behind a TLS-terminating proxy, or for a demonstration).
"""

from __future__ import annotations

import getpass
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import click

from broker.cli._audit_options import LogSource, log_options, subject_key
from broker.cli.common import bootstrap_option, resolve_bootstrap, settings
from broker.cli.gateway import reader_key

if TYPE_CHECKING:
    from broker.workspace.reports import Trust


@click.group()
def workspace() -> None:
    """Web pages for practitioners: queue, chronology, triage, alerts."""


@workspace.command("hash-password")
def hash_password_cmd() -> None:
    """Read a password (no echo) and print its scrypt hash for the users file."""
    from broker.workspace.sessions import hash_password  # noqa: PLC0415

    password = getpass.getpass("password: ")
    if len(password) < 12:
        raise click.UsageError("password: at least 12 characters")
    click.echo(hash_password(password))


@workspace.command("serve")
@click.option("--users", "users_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="YAML users file (username, subscriber, name, password hash).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8444, show_default=True, type=int)
@click.option("--http", "plain", is_flag=True,
              help="Plain HTTP (loopback addresses only).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Server certificate (default: $SAFESHARE_HOME/gateway/server.pem).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None)
@bootstrap_option
def serve(users_path: Path, host: str, port: int, plain: bool, tls_cert: Path | None,
          tls_key: Path | None, bootstrap: str | None) -> None:
    """Serve the workspace to browsers (sign-in with a users file)."""
    import uvicorn  # noqa: PLC0415

    from broker.cli.keys import feed_keyring_path  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.errors import SafeshareError  # noqa: PLC0415
    from broker.gateway.app import GatewayConfig, create_app  # noqa: PLC0415
    from broker.policy import Policy, PolicyError  # noqa: PLC0415
    from broker.signing.feedkeys import FeedKeyring  # noqa: PLC0415
    from broker.workspace import DpoConfig, WorkspaceConfig  # noqa: PLC0415
    from broker.workspace.sessions import UserError, load_users  # noqa: PLC0415

    s = settings()
    if plain and not ipaddress.ip_address(host).is_loopback:
        raise click.UsageError("--http: only on a loopback address (127.0.0.1 or ::1)")
    codec = Codec.from_dir(s.schemas_dir)
    if s.policy_path is None:
        raise click.UsageError("the workspace needs the policy (SAFESHARE_POLICY)")
    try:
        policy = Policy.load(s.policy_path, field_classes=codec.data_classes())
        users = load_users(users_path, {x.id for x in policy.subscribers})
    except (PolicyError, UserError) as exc:
        raise click.UsageError(str(exc)) from exc
    keyrings = {}
    for sub in {u.subscriber for u in users.values()}:
        path = feed_keyring_path(sub)
        if path.exists():
            try:
                keyrings[sub] = FeedKeyring.load(path)
            except SafeshareError as exc:
                raise click.ClickException(f"{path}: {exc}") from None
    bootstrap_ = resolve_bootstrap(bootstrap)
    app = create_app(GatewayConfig(
        bootstrap=bootstrap_, topics=s.topics, codec=codec, policy=policy,
        reader_key=reader_key(s),
        workspace=WorkspaceConfig(users=users, bootstrap=bootstrap_, topics=s.topics,
                                  policy=policy, keyrings=keyrings,
                                  dpo=DpoConfig(keys_dir=s.keys_dir))))
    tls: dict[str, str] = {}
    if not plain:
        cert = tls_cert or s.home / "gateway" / "server.pem"
        key = tls_key or s.home / "gateway" / "server.key"
        if not cert.exists():
            raise click.UsageError(f"no server certificate {cert}: run `safeshare keys "
                                   "server-cert` (or pass --http on 127.0.0.1)")
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    scheme = "http" if plain else "https"
    click.echo(f"workspace on {scheme}://{host}:{port}/workspace/ ({len(users)} users)",
               err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                lifespan="on", **tls)  # type: ignore[arg-type]


@workspace.group("report")
def report() -> None:
    """Reports for DPOs and auditors, from the verified audit log."""


def _trust(log: LogSource) -> Trust:
    """What a report trusts: the log keys, the witnesses and their quorum."""
    from broker.workspace import reports  # noqa: PLC0415

    return reports.Trust(log.trusted(), log.witness_vkeys, log.quorum)


def _write(out: Path | None, data: str | bytes) -> None:
    if out is None:
        click.echo(data if isinstance(data, str) else data.decode(), nl=False)
    elif isinstance(data, bytes):
        out.write_bytes(data)
    else:
        out.write_text(data)


@report.command("subject-access")
@click.option("--subject", required=True, help="The child's pseudonym (subject.pseudonym).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file (default: standard output).")
@click.option("--pdf", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write it as PDF (WeasyPrint).")
@click.option("--proofs", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every line's inclusion proof, a document for `audit verify-proof`.")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The router's subject pseudonym key "
              "(default $SAFESHARE_HOME/keys/subject-pseudonym.key).")
@log_options
def subject_access_cmd(subject: str, out: Path | None, pdf: Path | None, proofs: Path | None,
                       key_file: Path | None, log: LogSource) -> None:
    """A child's subject-access report: who received what, when, on which basis,
    what was withheld and why, break-glass shares and their reviews; each line
    with its inclusion proof. Exit 1 if the log does not verify."""
    from broker.codec import Codec  # noqa: PLC0415
    from broker.workspace import reports  # noqa: PLC0415

    s = settings()
    key = subject_key(key_file)
    r = reports.subject_access_report(
        log.load(), subject, key, _trust(log), None if log.bundle is not None else
        lambda glass: reports.read_reviews(resolve_bootstrap(log.bootstrap), s.topics,
                                           Codec.from_dir(s.schemas_dir), glass))
    html = reports.subject_access_html(r)
    _write(out, html)
    if proofs is not None:
        proofs.write_text(r.proofs_json())
    if pdf is not None:
        try:
            pdf.write_bytes(reports.to_pdf(html))
        except ImportError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{len(r.lines)} lines; audit log {r.verification}", err=True)
    if not r.verified:
        raise SystemExit(1)


@report.command("s62")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV file (default: standard output).")
@click.option("--users", "users_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The workspace's users file: name the people who consulted "
              "(the log holds only a keyed pseudonym of each; needs $SAFESHARE_HOME/keys).")
@log_options
def s62_cmd(out: Path | None, users_file: Path | None, log: LogSource) -> None:
    """DPA 2018 s.62 log as CSV: consultations (gateway and workspace reads) and
    disclosures of law-enforcement data (shares of police agencies' events)."""
    from broker.audit.exceptions import AuditError  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.policy import Policy, PolicyError  # noqa: PLC0415
    from broker.workspace import reports  # noqa: PLC0415

    s = settings()
    try:
        policy = Policy.load(s.policy_path, field_classes=Codec.from_dir(
            s.schemas_dir).data_classes()) if s.policy_path else None
    except PolicyError as exc:
        raise click.UsageError(f"cannot load the policy: {exc}") from None
    police = reports.law_enforcement(policy)
    b = log.load()
    trust = _trust(log)
    consultations = reports.read_consultations(resolve_bootstrap(log.bootstrap),
                                               s.topics.consultations)
    names = None
    if users_file is not None:
        from broker.workspace.sessions import UserError, load_users  # noqa: PLC0415

        try:
            users = load_users(users_file)
        except UserError as exc:
            raise click.UsageError(str(exc)) from None
        names = reports.reader_names(reader_key(s), users)
    try:
        _write(out, reports.verified_s62(b, trust, consultations, police, names))
    except AuditError as exc:
        raise click.ClickException(f"the audit log does not verify: {exc}") from None


@report.command("checkpoints")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file (default: standard output).")
@log_options
def checkpoints_cmd(out: Path | None, log: LogSource) -> None:
    """The checkpoint history with witness cosignatures and the verification result
    (exit 1 if the log does not verify)."""
    from broker.workspace import reports  # noqa: PLC0415

    h = reports.checkpoint_history(log.load(), _trust(log))
    _write(out, reports.checkpoint_html(h))
    click.echo(h.verification, err=True)
    if not h.verified:
        raise SystemExit(1)
