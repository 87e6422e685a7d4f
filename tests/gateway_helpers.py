"""A real gateway for tests: uvicorn over HTTPS on a free port, in a thread of
the test process, with its own partnership CA; httpx clients with client
certificates (keep-alive)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from broker.gateway.app import GatewayConfig, create_app
from broker.gateway.pki import CaFiles, Principal, issue_client, issue_server, make_ca
from broker.gateway.server import TlsFiles, make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    ca: CaFiles
    dir: Path

    def cert(self, kind: str, ident: str) -> tuple[str, str]:
        cert = self.dir / "clients" / f"{kind}-{ident}.pem"
        if not cert.exists():
            issue_client(self.ca, Principal(kind, ident), cert, cert.with_suffix(".key"))
        return str(cert), str(cert.with_suffix(".key"))

    def context(self, kind: str, ident: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(*self.cert(kind, ident))
        return ctx

    def client(self, kind: str, ident: str, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.context(kind, ident),
                            timeout=30.0, **kw)  # type: ignore[arg-type]


@contextmanager
def running_gateway(config: GatewayConfig, tmp: Path) -> Iterator[Running]:
    ca = CaFiles(tmp / "ca")
    make_ca(ca)
    issue_server(ca, ["127.0.0.1", "localhost"], tmp / "server.pem", tmp / "server.key")
    port = free_port()
    server = make_server(create_app(config), TlsFiles(tmp / "server.pem", tmp / "server.key",
                                                      ca.cert), port=port)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield Running(f"https://127.0.0.1:{port}", ca, tmp)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
