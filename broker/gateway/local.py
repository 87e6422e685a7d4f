"""A gateway in a thread of this process, with its own CA: for the demo, the
benchmark and the tests (a real uvicorn over HTTPS on a loopback port)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from broker.gateway.app import GatewayConfig, create_app
from broker.gateway.pki import CaFiles, Principal, issue_client, issue_server, make_ca
from broker.gateway.server import TlsFiles, make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalGateway:
    url: str
    ca: CaFiles
    dir: Path

    def cert(self, kind: str, ident: str) -> tuple[str, str]:
        """A client certificate and key naming ``kind:ident`` (issued on first use)."""
        cert = self.dir / "clients" / f"{kind}-{ident}.pem"
        if not cert.exists():
            issue_client(self.ca, Principal(kind, ident), cert, cert.with_suffix(".key"))
        return str(cert), str(cert.with_suffix(".key"))

    def context(self, kind: str, ident: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(*self.cert(kind, ident))
        return ctx

    def client(self, kind: str, ident: str, **kw: Any) -> httpx.Client:
        """A keep-alive httpx client authenticating as ``kind:ident``."""
        return httpx.Client(base_url=self.url, verify=self.context(kind, ident),
                            timeout=30.0, **kw)


@contextmanager
def local_gateway(config: GatewayConfig, directory: Path) -> Iterator[LocalGateway]:
    """Serve ``config`` over HTTPS on a free loopback port until the block ends.

    The CA lives in ``directory/ca`` (made if missing), the server certificate
    beside it.
    """
    ca = CaFiles(directory / "ca")
    if not ca.cert.exists():
        make_ca(ca)
    cert, key = directory / "server.pem", directory / "server.key"
    issue_server(ca, ["127.0.0.1", "localhost"], cert, key)
    port = free_port()
    server = make_server(create_app(config), TlsFiles(cert, key, ca.cert), port=port)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield LocalGateway(f"https://127.0.0.1:{port}", ca, directory)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
