"""``safeshare gateway``: the HTTPS gateway (serve, openapi).

The certificates it needs come from ``safeshare keys ca|server-cert|client-cert``
(broker/gateway/pki.py); by default they live under ``$SAFESHARE_HOME/gateway``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings


def gateway_dir() -> Path:
    return settings().home / "gateway"


def reader_key(s: Any) -> bytes:
    """The audit log's key for people's pseudonyms, made on first use (kept)."""
    from broker.gateway.consultations import READER_KEY_FILE  # noqa: PLC0415
    from broker.keyfiles import load_or_create_secret  # noqa: PLC0415

    return load_or_create_secret(s.keys_dir / READER_KEY_FILE)


def signing_keys_dir() -> Path:
    """Keys of agencies that delegate signing to the gateway (``signing: gateway``)."""
    return settings().keys_dir / "gateway"


@click.group()
def gateway() -> None:
    """The HTTPS gateway for agencies and subscribers without a Kafka client."""


@gateway.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=int)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Server certificate (default: $SAFESHARE_HOME/gateway/server.pem, made "
              "from the CA for --host if missing).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The partnership CA that signs client certificates "
              "(default: $SAFESHARE_HOME/gateway/ca).")
@click.option("--rate", default=200.0, show_default=True, help="Requests/s per caller.")
@click.option("--burst", default=400, show_default=True, help="Burst per caller.")
@click.option("--max-body", default=1024 * 1024, show_default=True, help="Bytes per request.")
@click.option("--max-events", default=100, show_default=True, help="Events per request.")
@click.option("--signing-keys", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keys of agencies delegating signing (default: $SAFESHARE_HOME/keys/gateway).")
@bootstrap_option
def serve(host: str, port: int, tls_cert: Path | None, tls_key: Path | None,
          ca_dir: Path | None, rate: float, burst: int, max_body: int, max_events: int,
          signing_keys: Path | None, bootstrap: str | None) -> None:
    """Serve the gateway over HTTPS (TLS >= 1.2; callers authenticate by client
    certificate, or by a bearer token of a client registered with
    `safeshare keys oauth-client`)."""
    from broker.codec import Codec  # noqa: PLC0415 - keep `--help` fast
    from broker.gateway.app import GatewayConfig, create_app  # noqa: PLC0415
    from broker.gateway.limits import Limits  # noqa: PLC0415
    from broker.gateway.pki import CaFiles, issue_server  # noqa: PLC0415
    from broker.gateway.server import TlsFiles, make_server  # noqa: PLC0415
    from broker.policy import Policy, PolicyError  # noqa: PLC0415

    s = settings()
    ca = CaFiles(ca_dir or gateway_dir() / "ca")
    if not ca.cert.exists():
        raise click.UsageError(f"no CA in {ca.dir}: run `safeshare keys ca` first")
    cert = tls_cert or gateway_dir() / "server.pem"
    key = tls_key or gateway_dir() / "server.key"
    if tls_cert is None and not cert.exists():
        issue_server(ca, [host], cert, key)
    codec = Codec.from_dir(s.schemas_dir)
    policy = None
    if s.policy_path is not None:
        try:
            policy = Policy.load(s.policy_path, field_classes=codec.data_classes())
        except PolicyError as exc:
            raise click.UsageError(f"cannot load the policy {s.policy_path}: {exc}") from exc
    config = GatewayConfig(
        bootstrap=resolve_bootstrap(bootstrap), topics=s.topics, codec=codec, policy=policy,
        signing_keys=signing_keys or signing_keys_dir(),
        oauth_clients=gateway_dir() / "oauth-clients.json",
        token_key=gateway_dir() / "token.key",
        limits=Limits(rate_per_s=rate, burst=burst, max_body_bytes=max_body,
                      max_events=max_events),
        time_bounds=s.time_bounds,
        reader_key=reader_key(s),
    )
    server = make_server(create_app(config), TlsFiles(cert, key, ca.cert), host=host, port=port,
                         log_level="info")
    click.echo(f"gateway on https://{host}:{port} (client certificates from {ca.cert})", err=True)
    server.run()


@gateway.command("openapi")
def openapi() -> None:
    """Print the OpenAPI 3 description (committed as docs/openapi.json)."""
    from broker.gateway.app import openapi_text  # noqa: PLC0415

    click.echo(openapi_text(), nl=False)
