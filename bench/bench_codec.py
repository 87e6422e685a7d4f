"""Codec figures: ``python -m bench codec`` runs the codec's own bench.

Microseconds per call of encode, decode, decode_old (the same decode with
fastavro reading every body, timed alternately with decode), redact and
from_json for each example event in ``tests/data/events`` (``python -m
broker.codec.bench``), followed by one ``BENCH {json}`` line per figure and
one per event for the decode speed-up (decode_old / decode). Prints figures;
never passes or fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.codec import bench as codec_bench  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    """Run the codec bench, echo its table, add machine-readable lines."""
    del argv  # no options
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        codec_bench.main()
    table = out.getvalue()
    print(table, end="", flush=True)
    lines = table.strip().splitlines()
    words = lines[0].split()
    heading = words[words.index("bytes") + 1 :]  # encode decode decode_old redact from_json
    for line in lines[1:]:
        cells = line.split()
        if len(cells) != 2 + len(heading):
            continue
        event = cells[0]
        figures = dict(zip(heading, map(float, cells[2:]), strict=True))
        for op, value in figures.items():
            print("BENCH " + json.dumps(
                {"name": f"codec {op} {event}", "value": value, "unit": "µs/call"}
            ))
        if figures.get("decode") and "decode_old" in figures:
            speedup = round(figures["decode_old"] / figures["decode"], 2)
            print("BENCH " + json.dumps(
                {"name": f"codec decode speedup {event}", "value": speedup, "unit": "x"}
            ))


if __name__ == "__main__":
    main(sys.argv[1:])
