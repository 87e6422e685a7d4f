"""Confidential feeds: what sealing a copy (HPKE, broker.signing.feeds) costs the
router, and opening it a subscriber, per KEM. Prints figures; never passes or fails.

    .venv/bin/python -m bench feeds
    .venv/bin/python bench/bench_feeds.py [--copies N] [--size BYTES]

Figures, for X-Wing (MLKEM768-X25519, the default) and DHKEM(X25519):

- µs per copy to seal: ``seal_message`` (HPKE single-shot encrypt of a FeedRecord
  of ``--size`` bytes, default 1,500, plus the EncryptedFeedRecord's Avro
  encoding), best of three runs of ``--copies`` (default 1,000);
- µs per copy to open: ``FeedOpener.open`` of the decoded record;
- bytes a sealed copy adds to the plain one.

Each figure is printed for people and once more as a machine-readable line::

    BENCH {"name": "...", "value": ..., "unit": "..."}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.codec import Codec  # noqa: E402
from broker.signing.feeds import (  # noqa: E402
    ENCRYPTED_FEED_RECORD,
    KEMS,
    FeedOpener,
    FeedPrivateKey,
    seal_message,
)


def _best_us(run: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            run()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def _report(name: str, value: float, unit: str, text: str) -> None:
    print(f"  {text}: {value:,.1f} {unit}")
    print("BENCH " + json.dumps({"name": name, "value": round(value, 1), "unit": unit}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1500)
    args = parser.parse_args(argv)
    codec = Codec.default()
    plaintext = bytes(args.size)
    event_id = str(uuid.uuid4())
    print(f"copies of {args.size} bytes, best of 3 x {args.copies}")
    for kem in KEMS:
        key = FeedPrivateKey.generate(kem)
        public = key.public()
        opener = FeedOpener("torbay-mash", [key])
        data = seal_message(codec, public, "torbay-mash", event_id, plaintext)
        record = codec.decode(data, ENCRYPTED_FEED_RECORD)
        slug = kem.lower().replace("-", "_")
        print(kem)
        seal = partial(seal_message, codec, public, "torbay-mash", event_id, plaintext)
        _report(f"feeds.seal_us.{slug}", _best_us(seal, args.copies), "us/copy", "seal")
        unseal = partial(opener.open, record)
        _report(f"feeds.open_us.{slug}", _best_us(unseal, args.copies), "us/copy", "open")
        _report(f"feeds.overhead_bytes.{slug}", len(data) - args.size, "bytes", "added bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
