"""The HTTPS gateway's publish rate and latency against ``broker.api.Publisher``.

Same broker, same run, same events (the school's example concern, fresh ids):

1. ``Publisher``: one thread publishes one event at a time, each acknowledged
   by the broker (acks=all) before the next: the rate and p50/p99 per event.
   (1) and (2) alternate in ``--rounds`` blocks; the ratio is the median of
   the rounds' ratios.
2. The gateway (``safeshare gateway serve`` as its own process, TLS 1.3 with
   a client certificate): one keep-alive client POSTs one event at a time:
   the rate, p50/p99, and the ratio to (1). Twice: with a lean client (the
   standard library's ``http.client``, one connection) and with httpx. On
   this 2-core machine the client's CPU competes with the gateway's, and
   httpx spends about 1.3 ms of CPU per request, as much as the gateway;
   an agency's client runs on its own machine, so the lean client's ratio is
   the gateway's own cost, and httpx's is printed beside it.
3. The gateway at a steady 200 requests/s for ``--seconds`` from 16 keep-alive
   clients (open loop: latency counted from each request's scheduled time),
   with each client; each client connects (and publishes one event, untimed)
   before the schedule starts, so 16 TLS handshakes at once are not counted
   as load.
4. The floor under (3): ``Publisher.send`` alone, 16 threads sharing one
   producer, paced the same way (no HTTP, no TLS): what waiting for the
   broker's acknowledgement (acks=all) costs at that rate on this machine.

Prints figures and ``BENCH {json}`` lines; never fails on time.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from broker import config
from broker.api import Publisher
from broker.codec import Codec
from broker.gateway.local import LocalGateway, free_port
from broker.gateway.pki import CaFiles, make_ca
from broker.kafka.admin import Admin
from broker.kafka.configuration import standard_topic_specs
from broker.policy import Policy
from broker.topics import Topics

EVENT = Path(__file__).parent.parent / "tests" / "data" / "events" / "education_concern.json"
AGENCY = "example-academy"


def bench(name: str, value: float, unit: str) -> None:
    print("BENCH " + json.dumps({"name": name, "value": round(value, 2), "unit": unit}))


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else 0.0


def event() -> dict[str, Any]:
    e: dict[str, Any] = json.loads(EVENT.read_text())
    e["event_id"] = str(uuid.uuid4())
    return e


def timed(n: int, send: Callable[[], None]) -> tuple[float, list[float]]:
    lat = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        send()
        lat.append((time.perf_counter() - t) * 1000)
    return n / (time.perf_counter() - start), lat


def report(what: str, rate: float, lat: list[float]) -> None:
    print(f"{what}: {rate:,.0f} events/s, p50 {p(lat, 0.5):.1f} ms, p99 {p(lat, 0.99):.1f} ms")
    bench(f"{what} rate", rate, "events/s")
    bench(f"{what} p99", p(lat, 0.99), "ms")


def start_gateway(home: Path, s: config.Settings, bootstrap: str) -> tuple[Any, LocalGateway]:
    ca = CaFiles(home / "gateway" / "ca")
    make_ca(ca)
    port = free_port()
    env = {**os.environ, "SAFESHARE_HOME": str(home), "SAFESHARE_NAMESPACE": s.namespace,
           "SAFESHARE_BOOTSTRAP": bootstrap}
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli.main", "gateway", "serve", "--port", str(port),
         "--rate", "100000", "--burst", "100000"], env=env)
    gw = LocalGateway(f"https://127.0.0.1:{port}", ca, home / "gateway")
    deadline = time.monotonic() + 60
    while True:
        try:
            with gw.client("agency", AGENCY) as c:
                c.get("/openapi.json")
            return proc, gw
        except Exception:  # noqa: BLE001 - not listening yet
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the gateway did not start") from None
            time.sleep(0.1)


class Poster(Protocol):
    """A keep-alive HTTPS client that POSTs one event and checks it got a receipt."""

    def post(self) -> None: ...
    def close(self) -> None: ...


class LeanPoster:
    """One keep-alive connection of the standard library's ``http.client``."""

    def __init__(self, gw: LocalGateway) -> None:
        url = urlsplit(gw.url)
        self.conn = http.client.HTTPSConnection(url.hostname or "", url.port,
                                                context=gw.context("agency", AGENCY))

    def post(self) -> None:
        self.conn.request("POST", "/v1/events", json.dumps(event()).encode(),
                          {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        body = r.read()
        assert r.status == 201, body

    def close(self) -> None:
        self.conn.close()


class HttpxPoster:
    """One keep-alive httpx client (:meth:`LocalGateway.client`)."""

    def __init__(self, gw: LocalGateway) -> None:
        self.client = gw.client("agency", AGENCY)

    def post(self) -> None:
        r = self.client.post("/v1/events", json=event())
        assert r.status_code == 201, r.text

    def close(self) -> None:
        self.client.close()


POSTERS: dict[str, Callable[[LocalGateway], Poster]] = {
    "http.client": LeanPoster, "httpx": HttpxPoster}


def alternated(pub: Publisher, gw: LocalGateway, events: int, rounds: int
               ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The Publisher and each gateway client in turn, ``rounds`` times, each a
    block of ``events // rounds`` sequential events: the machine's swings fall
    on both sides of each round's ratio. Rates per round, latencies of all."""
    posters = {name: make(gw) for name, make in POSTERS.items()}
    rates: dict[str, list[float]] = {"Publisher": [], **{n: [] for n in posters}}
    lats: dict[str, list[float]] = {n: [] for n in rates}
    try:
        pub.publish_json(event())  # warm up: connections, metadata, the agency's memory
        for c in posters.values():
            c.post()
        sends: dict[str, Callable[[], None]] = {
            "Publisher": lambda: (pub.publish_json(event()), None)[1],
            **{n: c.post for n, c in posters.items()}}
        for _ in range(rounds):
            for name, send in sends.items():
                rate, lat = timed(events // rounds, send)
                rates[name].append(rate)
                lats[name] += lat
    finally:
        for c in posters.values():
            c.close()
    return rates, lats


def paced(gw: LocalGateway, make: Callable[[LocalGateway], Poster], rate: float,
          seconds: float, clients: int = 16) -> list[float]:
    """Open-loop load: request i is due at i/rate; latency from when it was due."""

    def worker(k: int, total: int, due_at: Callable[[int], float], lat: list[float],
               lock: threading.Lock, ready: threading.Barrier) -> None:
        c = make(gw)
        try:
            c.post()  # keep-alive clients: the TLS handshake is before, not in, the load
            ready.wait()
            for i in range(k, total, clients):
                due = due_at(i)
                c.post()
                done = (time.perf_counter() - due) * 1000
                with lock:
                    lat.append(done)
        finally:
            c.close()

    return _open_loop(worker, rate, seconds, clients)


def paced_publisher(pub: Publisher, codec: Codec, rate: float, seconds: float,
                    clients: int = 16) -> list[float]:
    """:func:`paced` without the gateway: ``Publisher.send`` of pre-encoded events."""
    ready = [(r, pub.encode(r)) for r in (codec.from_json(event(), "safeshare.ConcernEvent")
                                          for _ in range(int(rate * seconds)))]

    def worker(k: int, total: int, due_at: Callable[[int], float], lat: list[float],
               lock: threading.Lock, together: threading.Barrier) -> None:
        together.wait()
        for i in range(k, total, clients):
            due = due_at(i)
            pub.send(*ready[i])
            with lock:
                lat.append((time.perf_counter() - due) * 1000)

    return _open_loop(worker, rate, seconds, clients)


def _open_loop(worker: Callable[..., None], rate: float, seconds: float,
               clients: int) -> list[float]:
    total = int(rate * seconds)
    lat: list[float] = []
    lock = threading.Lock()
    start = [0.0]

    def begin() -> None:  # once every client is connected: the schedule starts
        start[0] = time.perf_counter() + 0.05

    ready = threading.Barrier(clients, action=begin)

    def due_at(i: int) -> float:
        due = start[0] + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return due

    threads = [threading.Thread(target=worker, args=(k, total, due_at, lat, lock, ready))
               for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--rounds", type=int, default=5,
                    help="Alternated rounds of --events/rounds events per client.")
    args = ap.parse_args(list(argv or []))
    from broker.kafka.cluster import obtain_cluster  # noqa: PLC0415

    base = config.load()
    codec = Codec.from_dir(base.schemas_dir)
    with obtain_cluster(base) as cluster, tempfile.TemporaryDirectory() as tmp:
        topics = Topics(namespace=f"bgw{uuid.uuid4().hex[:8]}")
        s = config.Settings(**{**base.__dict__, "namespace": topics.namespace})
        policy = Policy.load(s.policy_file(), field_classes=codec.data_classes())
        with Admin(cluster.bootstrap) as admin:
            admin.ensure_topics(standard_topic_specs(
                topics, [a.id for a in policy.agencies], [x.id for x in policy.subscribers]))
        try:
            proc, gw = start_gateway(Path(tmp), s, cluster.bootstrap)
            try:
                with Publisher(bootstrap=cluster.bootstrap, agency=AGENCY, topics=topics,
                               codec=codec, policy=policy) as pub:
                    rates, lats = alternated(pub, gw, args.events, args.rounds)
                    floor = paced_publisher(pub, codec, args.rate, args.seconds)
                report("Publisher publish", statistics.median(rates["Publisher"]),
                       lats["Publisher"])
                for name in POSTERS:
                    report(f"gateway publish ({name} client)", statistics.median(rates[name]),
                           lats[name])
                    each = [g / q for g, q in zip(rates[name], rates["Publisher"], strict=True)]
                    ratio = statistics.median(each)
                    print(f"ratio gateway/Publisher ({name} client): {ratio:.2f} (aim >= 0.5; "
                          "median of the alternated rounds' "
                          f"{', '.join(f'{r:.2f}' for r in each)})")
                    bench(f"gateway/Publisher rate ratio ({name} client)", ratio, "ratio")
                # This process's long-lived objects (the Publisher, the codec, the
                # rounds' figures) out of the collector's way: its full collections
                # (50-60 ms here) would stall all 16 client threads and count as the
                # gateway's latency.
                gc.collect()
                gc.freeze()
                for name, make in POSTERS.items():
                    lat = paced(gw, make, args.rate, args.seconds)
                    print(f"gateway at {args.rate:g} requests/s for {args.seconds:g} s "
                          f"({name} clients): p50 {p(lat, 0.5):.1f} ms, "
                          f"p99 {p(lat, 0.99):.1f} ms (aim < 50 ms)")
                    bench(f"gateway p99 at {args.rate:g} req/s ({name} clients)",
                          p(lat, 0.99), "ms")
                print(f"floor, Publisher.send alone at {args.rate:g}/s from 16 threads: "
                      f"p50 {p(floor, 0.5):.1f} ms, p99 {p(floor, 0.99):.1f} ms")
                bench(f"Publisher p99 at {args.rate:g} events/s", p(floor, 0.99), "ms")
                print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        finally:
            with Admin(cluster.bootstrap) as admin:
                admin.delete_topics([t for t in admin.list_topics()
                                     if t.startswith(topics.namespace + ".")])


if __name__ == "__main__":
    main(sys.argv[1:])
