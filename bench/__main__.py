"""``make bench``: run every ``bench/bench_*.py`` that has a ``main()`` and print its figures.

Benchmarks print figures (and one ``BENCH {json}`` line per figure); they never
pass or fail on time. Run one alone with ``python -m bench NAME`` (e.g. ``policy``);
options after the names go to each benchmark run, e.g.
``python -m bench router --only core --profile``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    wanted, options = argv[:split], argv[split:]
    if wanted:
        names = [n for n in names if any(a in n for a in wanted)]
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "main", None)
        if run is None:
            continue
        print(f"\n===== {name} =====", flush=True)
        started = time.perf_counter()
        # each bench parses its own options
        saved, sys.argv = sys.argv, [f"bench/{name}.py", *options]
        try:
            if inspect.signature(run).parameters:
                run(options)
            else:
                run()
        except Exception:  # noqa: BLE001 - report and go on with the other benchmarks
            traceback.print_exc()
            failed.append(name)
        finally:
            sys.argv = saved
        print(f"({name}: {time.perf_counter() - started:.1f} s)", flush=True)
    if failed:
        print(f"\nbenchmarks that crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
