"""Splink on the generated population: can its incremental matching link one event in time?

Not part of ``make bench`` (Splink, DuckDB and pandas are not dependencies of
Safeshare). Run in a virtualenv with ``pip install splink nicknames`` and
this checkout on PYTHONPATH::

    python -m bench.identity_splink --children 10000 --seed 1 --out model.json

Train on another seed than the bench's (13) so that ``python -m bench identity``
measures the model on a population it was not trained on.

It trains a Fellegi-Sunter model with Splink (u by random sampling, m by
expectation maximisation), then times ``predict_between`` (Splink 5's
incremental matching of new records against existing ones) for single new
records, and prints the trained m and u of each comparison level and the
per-record latency as ``BENCH {json}`` lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from bench.identity_population import population
from broker.identity.nicknames import familiar_forms, formal_forms, forms


def frame(events) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    rows = []
    for i, e in enumerate(events):
        rows.append({
            "unique_id": i,
            "given": e.given.lower() if e.given else None,
            "given_forms": sorted(forms(e.given)) if e.given else None,
            "given_formal": sorted(formal_forms(e.given)) if e.given else None,
            "given_familiar": sorted(familiar_forms(e.given)) if e.given else None,
            "family": e.family.lower() if e.family else None,
            "dob": e.dob.isoformat() if e.dob else None,
            "postcode": e.postcode,
            "cluster": e.child,
        })
    return pd.DataFrame(rows)


def given_comparison() -> cl.CustomComparison:
    """The router's given-name levels (broker/identity/comparisons.py ``given_level``):
    Splink's NameComparison with a familiar form (``nicknames.same_name``: one name
    a form of the other, or both forms of a name at least as long as each) and one
    keying error of the name or of a form of it (``typo_level``: the name mistyped
    and the name measured against four letters or more) and one keying error of a
    familiar form (``familiar_typo``) as levels of their own, after the close
    spellings."""
    jw = "jaro_winkler_similarity(given_l, given_r) >= "
    familiar = (
        "list_contains(given_forms_r, given_l) OR list_contains(given_forms_l, given_r)"
        " OR len(list_filter(list_intersect(given_forms_l, given_forms_r),"
        " lambda c: length(c) >= greatest(length(given_l), length(given_r)))) > 0"
    )
    keying = (
        "(length(given_l) >= 4 AND length(given_r) >= 4"
        " AND damerau_levenshtein(given_l, given_r) <= 1)"
        " OR (length(given_l) >= 4 AND len(list_filter(given_formal_r,"
        " lambda x: length(x) >= 4 AND damerau_levenshtein(given_l, x) <= 1)) > 0)"
        " OR (length(given_r) >= 4 AND len(list_filter(given_formal_l,"
        " lambda x: length(x) >= 4 AND damerau_levenshtein(x, given_r) <= 1)) > 0)"
    )
    familiar_keying = (
        "(length(given_l) >= 3 AND len(list_filter(given_familiar_r,"
        " lambda x: length(x) >= 3 AND damerau_levenshtein(given_l, x) <= 1)) > 0)"
        " OR (length(given_r) >= 3 AND len(list_filter(given_familiar_l,"
        " lambda x: length(x) >= 3 AND damerau_levenshtein(x, given_r) <= 1)) > 0)"
    )
    return cl.CustomComparison(
        output_column_name="given",
        comparison_levels=[
            cll.NullLevel("given"),
            cll.ExactMatchLevel("given", term_frequency_adjustments=True),
            cll.CustomLevel(jw + "0.92", label_for_charts="Jaro-Winkler >= 0.92"),
            cll.CustomLevel(familiar, label_for_charts="a familiar form"),
            cll.CustomLevel(keying, label_for_charts="one keying error of it or a form"),
            cll.CustomLevel(familiar_keying,
                            label_for_charts="one keying error of a familiar form"),
            cll.CustomLevel(jw + "0.88", label_for_charts="Jaro-Winkler >= 0.88"),
            cll.CustomLevel(jw + "0.7", label_for_charts="Jaro-Winkler >= 0.7"),
            cll.ElseLevel(),
        ],
    )


def family_comparison() -> cl.CustomComparison:
    """The router's family-name levels (broker/identity/comparisons.py
    ``family_level``): Splink's NameComparison with one keying error (four letters
    or more) as a level of its own after Jaro-Winkler 0.92."""
    jw = "jaro_winkler_similarity(family_l, family_r) >= "
    keying = ("length(family_l) >= 4 AND length(family_r) >= 4"
              " AND damerau_levenshtein(family_l, family_r) <= 1")
    return cl.CustomComparison(
        output_column_name="family",
        comparison_levels=[
            cll.NullLevel("family"),
            cll.ExactMatchLevel("family", term_frequency_adjustments=True),
            cll.CustomLevel(jw + "0.92", label_for_charts="Jaro-Winkler >= 0.92"),
            cll.CustomLevel(keying, label_for_charts="one keying error"),
            cll.CustomLevel(jw + "0.88", label_for_charts="Jaro-Winkler >= 0.88"),
            cll.CustomLevel(jw + "0.7", label_for_charts="Jaro-Winkler >= 0.7"),
            cll.ElseLevel(),
        ],
    )


def dob_comparison() -> cl.CustomComparison:
    """The router's date-of-birth levels (broker/identity/linkage.py ``dob_level``):
    Splink's DateOfBirthComparison with two keying errors as levels of their own,
    day and month swapped and one day apart, before its Levenshtein <= 1 (a digit
    off anywhere, ten times as likely between two children by chance)."""
    swapped = ("substr(dob_l, 1, 5) || substr(dob_l, 9, 2) || '-' || substr(dob_l, 6, 2)"
               " = dob_r")
    return cl.CustomComparison(
        output_column_name="dob",
        comparison_levels=[
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob"),
            cll.CustomLevel(swapped, label_for_charts="day and month swapped"),
            cll.AbsoluteDateDifferenceLevel("dob", threshold=1, metric="day",
                                            input_is_string=True),
            cll.LevenshteinLevel("dob", 1),
            cll.AbsoluteDateDifferenceLevel("dob", threshold=1, metric="month",
                                            input_is_string=True),
            cll.AbsoluteDateDifferenceLevel("dob", threshold=1, metric="year",
                                            input_is_string=True),
            cll.AbsoluteDateDifferenceLevel("dob", threshold=10, metric="year",
                                            input_is_string=True),
            cll.ElseLevel(),
        ],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1,
                    help="the training population's seed (the bench measures seed 13)")
    ap.add_argument("--probes", type=int, default=50)
    ap.add_argument("--out", default=None, help="write the trained model (Splink JSON) here")
    ap.add_argument("--labelled", action="store_true",
                    help="m from the population's true children (Splink's estimate_m_from_"
                    "label_column) instead of expectation maximisation")
    args = ap.parse_args()
    _, events = population(args.children, seed=args.seed)
    df = frame(events)
    db = DuckDBAPI()
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            given_comparison(),
            family_comparison(),
            dob_comparison(),
            cl.PostcodeComparison("postcode"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("dob"), block_on("family", "substr(dob, 1, 4)"),
            block_on("postcode"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    started = time.perf_counter()
    linker = Linker(db.register(df), settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("family", "given", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    if args.labelled:
        linker.training.estimate_m_from_label_column("cluster")
    else:
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("family", "postcode")
        )
    trained = time.perf_counter() - started
    print(f"trained in {trained:.1f} s on {len(df)} records")
    model = linker.misc.save_model_to_json()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(model, fh, indent=1)
    for c in model["comparisons"]:
        for lv in c["comparison_levels"]:
            if lv.get("is_null_level"):
                continue
            print(f"{c['output_column_name']:>14} {lv.get('label_for_charts', '')[:40]:<40}"
                  f" m={lv.get('m_probability')} u={lv.get('u_probability')}")

    existing = db.register(df.iloc[len(df) // 10:].reset_index(drop=True), table_name="existing")
    lat = []
    for i in range(args.probes):
        one = db.register(df.iloc[[i]].reset_index(drop=True), table_name=f"new_{i}")
        t0 = time.perf_counter()
        linker.inference.predict_between(existing, one, threshold_match_probability=0.5)
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"Splink predict_between, one new record vs {len(df) - len(df) // 10} existing: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({args.probes} probes)")
    print("BENCH " + json.dumps({"bench": "identity_splink", "figure": "predict_between_ms",
                                 "p50": round(p50, 2), "p99": round(p99, 2),
                                 "existing": len(df) - len(df) // 10}))


if __name__ == "__main__":
    main()
