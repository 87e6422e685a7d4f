"""Print how long the codec's hot paths take: ``python -m bench.codec_calls``.

Figures only; nothing passes or fails on time. Uses the example events in
``tests/data/events`` with the project's schemas. ``decode_old`` is the same
decode with every body read by fastavro (the decoder before the generated
reader, ``_read.py``), timed alternately with ``decode`` in the same process
(the best of a few rounds each), so the ratio of the two holds on a busy machine.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.codec.codec import Codec

EVENTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "events"


def _per_call_us(fn: Callable[[], Any], seconds: float = 0.3) -> float:
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            fn()
        calls += 100
    return elapsed / calls * 1e6


def _best_of_alternating(calls: list[Callable[[], Any]], rounds: int = 5) -> list[float]:
    """Each call's best figure over ``rounds`` rounds that time them in turn."""
    best = [float("inf")] * len(calls)
    for _ in range(rounds):
        for i, call in enumerate(calls):
            best[i] = min(best[i], _per_call_us(call, 0.1))
    return best


def _fastavro_only(codec: Codec) -> Codec:
    """The same codec reading every body with fastavro (the decoder as it was)."""
    old = Codec.from_dir(codec.schemas_dir)
    for name in old.names():
        old._readers[name] = None  # as if no reader could be generated
    return old


def main() -> None:
    codec = Codec.default()
    old = _fastavro_only(codec)
    grant = {"concern_summary", "location", "pseudonym"}
    heading = ("encode", "decode", "decode_old", "redact", "from_json")
    print(f"{'event (µs per call)':<28}{'bytes':>6}" + "".join(f"{h:>11}" for h in heading))
    for path in sorted(EVENTS.glob("*.json")):
        obj = json.loads(path.read_text(encoding="utf-8"))
        record = codec.from_json(obj)
        data = codec.encode(record)
        decode, decode_old = _best_of_alternating(
            [functools.partial(codec.decode, data), functools.partial(old.decode, data)]
        )
        figures = [
            _per_call_us(functools.partial(codec.encode, record)),
            decode,
            decode_old,
            _per_call_us(functools.partial(codec.redact, record, grant)),
            _per_call_us(functools.partial(codec.from_json, obj)),
        ]
        print(f"{path.stem:<28}{len(data):>6}" + "".join(f"{f:>11.1f}" for f in figures))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
