"""Serving the gateway over HTTPS with client certificates (uvicorn).

TLS 1.2 or later only. A client certificate, if presented, must chain to the
partnership CA (``ssl.CERT_OPTIONAL``: a caller without one authenticates by
an OAuth2 bearer token, or gets 401). uvicorn verifies the chain; the peer
certificate is handed to the application in the ASGI scope as
``scope["extensions"]["tls"]["client_cert_der"]`` (after the ASGI TLS
extension's name), which :mod:`broker.gateway.auth` reads.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key and the CA that signs client certificates."""

    cert: Path
    key: Path
    client_ca: Path


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    """An SSL context for the gateway: TLS >= 1.2, client certificates verified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ctx.load_verify_locations(cafile=str(tls.client_ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class _PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, adding the verified peer certificate to each scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_der": der}
            await inner(scope, receive, send)

        self.app = app


def make_server(
    app: Any,
    tls: TlsFiles,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    log_level: str = "warning",
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the gateway's TLS settings (not started)."""

    def factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return server_context(tls)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_PeerCertProtocol,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        ssl_ca_certs=str(tls.client_ca),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        ssl_context_factory=factory,
        log_level=log_level,
        access_log=False,
        # Callers are told apart by their certificate, token or address (the rate
        # limits): X-Forwarded-For from a local client must not pick the address.
        # The gateway terminates mutual TLS itself, so no proxy stands before it.
        proxy_headers=False,
        lifespan="on",
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)
