"""Print how long the codec's hot paths take: ``python -m broker.codec.bench``.

Figures only; nothing passes or fails on time. Uses the example events in
``tests/data/events`` with the project's schemas.
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

EVENTS = Path(__file__).resolve().parents[2] / "tests" / "data" / "events"


def _per_call_us(fn: Callable[[], Any], seconds: float = 0.3) -> float:
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            fn()
        calls += 100
    return elapsed / calls * 1e6


def main() -> None:
    codec = Codec.default()
    grant = {"concern_summary", "location", "pseudonym"}
    heading = ("encode", "decode", "redact", "from_json")
    print(f"{'event (µs per call)':<28}{'bytes':>6}" + "".join(f"{h:>11}" for h in heading))
    for path in sorted(EVENTS.glob("*.json")):
        obj = json.loads(path.read_text(encoding="utf-8"))
        record = codec.from_json(obj)
        data = codec.encode(record)
        calls: list[Callable[[], Any]] = [
            functools.partial(codec.encode, record),
            functools.partial(codec.decode, data),
            functools.partial(codec.redact, record, grant),
            functools.partial(codec.from_json, obj),
        ]
        figures = "".join(f"{_per_call_us(call):>11.1f}" for call in calls)
        print(f"{path.stem:<28}{len(data):>6}{figures}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
