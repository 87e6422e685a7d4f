"""A running workspace for tests and the bench: the gateway app with the pages,
served by uvicorn over plain HTTP on a free local port, the router and the loop
service routing continuously on threads, all against the real broker."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from click.testing import CliRunner, Result

from broker import config
from broker.cli.main import _register
from broker.cli.main import cli as main_cli
from broker.clock import SystemClock
from broker.codec import Codec
from broker.gateway.app import GatewayConfig, create_app
from broker.gateway.consultations import READER_KEY_FILE
from broker.keyfiles import load_or_create_secret
from broker.loop.service import LoopService
from broker.policy import Policy
from broker.routing.app import build_core, build_service
from broker.topics import Topics
from broker.workspace import DpoConfig, WorkspaceConfig
from broker.workspace.sessions import User, hash_password

CODEC = Codec.default()
PASSWORD = "correct horse battery staple"
USERS = {
    "sam": User("sam", "torbay-mash", "Sam Social Worker", hash_password(PASSWORD)),
    "dana": User("dana", "example-academy-dsl", "Dana DSL", hash_password(PASSWORD)),
    "dee": User("dee", "torbay-mash", "Dee DPO", hash_password(PASSWORD), role="dpo"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_workspace(bootstrap: str, topics: Topics, settings: config.Settings, policy: Policy
                      ) -> Iterator[str]:
    """Yield the base URL of a workspace with router and loop running behind it."""
    clock = SystemClock()
    router = build_service(settings, bootstrap, clock=clock, instance_id="ws-test",
                           core=build_core(settings, clock=clock, codec=CODEC))
    loop = LoopService(bootstrap, topics=topics, codec=CODEC, policy=policy.clocks,
                       clock=clock, instance_id="ws-test")
    app = create_app(GatewayConfig(
        bootstrap=bootstrap, topics=topics, policy=policy, codec=CODEC,
        reader_key=load_or_create_secret(settings.keys_dir / READER_KEY_FILE),
        workspace=WorkspaceConfig(users=USERS, bootstrap=bootstrap, topics=topics,
                                  policy=policy, secret=b"test-secret-0123456789abcdef",
                                  dpo=DpoConfig(keys_dir=settings.home / "keys"))))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    threads = [threading.Thread(target=router.run, daemon=True),
               threading.Thread(target=loop.run, daemon=True),
               threading.Thread(target=server.run, daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the workspace server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        router.stop()
        loop.stop()
        for t in threads:
            t.join(timeout=15)
        router.close()
        loop.close()


def http_sign_in(url: str, username: str = "sam") -> httpx.Client:
    """A client signed in to the workspace at ``url`` through its form (CSRF and all)."""
    c = httpx.Client(base_url=url, timeout=60)  # a loaded 2-core machine is slow
    c.post("/workspace/signin", data={"username": username, "password": PASSWORD,
                                      "csrf": csrf_of(c.get("/workspace/signin").text)})
    assert c.cookies.get("ws_session"), f"{username} could not sign in"
    return c


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m is not None, "no CSRF token on the page"
    return m.group(1)


def cli(home: Path, topics: Topics, bootstrap: str, *args: str) -> Result:
    """``safeshare ARGS`` in this process, for this test's home, namespace and broker."""
    _register()
    env = {"SAFESHARE_HOME": str(home), "SAFESHARE_NAMESPACE": topics.namespace,
           "SAFESHARE_BOOTSTRAP": bootstrap}
    return CliRunner().invoke(main_cli, list(args), env=env, catch_exceptions=False)
