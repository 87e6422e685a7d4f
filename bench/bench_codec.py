"""Codec figures: ``python -m bench codec`` runs the codec's own bench.

Microseconds per call of encode, decode, redact and from_json for each example
event in ``tests/data/events`` (``python -m broker.codec.bench``), followed by
one ``BENCH {json}`` line per figure. Prints figures; never passes or fails.
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
    heading = lines[0].split()[-4:]  # encode decode redact from_json
    for line in lines[1:]:
        cells = line.split()
        if len(cells) != 2 + len(heading):
            continue
        event = cells[0]
        for op, value in zip(heading, cells[2:], strict=True):
            print("BENCH " + json.dumps(
                {"name": f"codec {op} {event}", "value": float(value), "unit": "µs/call"}
            ))


if __name__ == "__main__":
    main(sys.argv[1:])
