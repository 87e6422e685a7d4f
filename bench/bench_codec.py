"""Codec figures: ``python -m bench codec`` runs the codec's own bench.

Microseconds per call of encode, decode, decode_old (the same decode with
fastavro reading every body, timed alternately with decode), redact and
from_json for each example event in ``tests/data/events`` (``python -m
bench.codec_calls``), followed by one ``BENCH {json}`` line per figure and
one per event for the decode speed-up (decode_old / decode). Prints figures;
never passes or fails.

Then the router's per-event codec work for each example event: ``route_old``
is ``decode`` + ``written`` (the event encoded again, with cuts) + three
redacted copies, ``route`` is ``decode_for_routing`` (copies spliced from the
input bytes) + the same three copies, timed in alternation in one process
(best of five rounds each, so the VM's drift hits both alike), and their ratio.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import codec_calls as codec_bench  # noqa: E402
from broker.codec import Codec  # noqa: E402

#: Three subscribers' grants, as the bench router's policy gives (each copy differs).
GRANTS = (
    frozenset({"concern_summary", "location", "pseudonym"}),
    frozenset({"concern_summary"}),
    frozenset({"concern_summary", "location", "pseudonym", "identity", "health", "free_text"}),
)


def _route_old(codec: Codec, data: bytes) -> None:
    written = codec.written(codec.decode(data))
    for grant in GRANTS:
        written.redacted(grant)


def _route_new(codec: Codec, data: bytes) -> None:
    _, written = codec.decode_for_routing(data)
    for grant in GRANTS:
        written.redacted(grant)


def routing() -> None:
    """µs per event of the router's codec work, writer path vs input-bytes path."""
    codec = Codec.default()
    print(f"{'event (µs per event)':<28}{'bytes':>6}{'route_old':>11}{'route':>11}{'ratio':>8}")
    for path in sorted(codec_bench.EVENTS.glob("*.json")):
        data = codec.encode(codec.from_json(json.loads(path.read_text(encoding="utf-8"))))
        old, new = codec_bench._best_of_alternating(
            [functools.partial(_route_old, codec, data), functools.partial(_route_new, codec, data)]
        )
        ratio = round(new / old, 2)
        print(f"{path.stem:<28}{len(data):>6}{old:>11.1f}{new:>11.1f}{ratio:>8.2f}", flush=True)
        for name, value, unit in (
            (f"codec route_old {path.stem}", round(old, 1), "µs/event"),
            (f"codec route {path.stem}", round(new, 1), "µs/event"),
            (f"codec route ratio {path.stem}", ratio, "x"),
        ):
            print("BENCH " + json.dumps({"name": name, "value": value, "unit": unit}))


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
    routing()


if __name__ == "__main__":
    main(sys.argv[1:])
