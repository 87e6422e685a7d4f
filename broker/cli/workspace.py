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

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings


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
    from broker.workspace import WorkspaceConfig  # noqa: PLC0415
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
        workspace=WorkspaceConfig(users=users, bootstrap=bootstrap_, topics=s.topics,
                                  policy=policy, keyrings=keyrings)))
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
