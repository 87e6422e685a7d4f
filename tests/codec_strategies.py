"""Hypothesis strategies for any record a schema allows, drawn from the codec's own
schema model (a field added to a schema is covered without touching the tests).

Shared by the codec's property tests (``test_codec_properties``, ``_read``, ``_write``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from broker.codec import Codec
from broker.codec._schema import Array, Enum, Fixed, Map, Node, Primitive, Record, Union
from broker.identity.nhs import nhs_check_digit, upn_check_letter

ROOT = Path(__file__).resolve().parent.parent
CODEC = Codec.from_dir(ROOT / "schemas")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Text without lone surrogates (which UTF-8 cannot carry).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# timestamp-millis values a datetime can hold, at millisecond precision.
TIMESTAMPS = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999).map(
    lambda ms: EPOCH + timedelta(milliseconds=ms)
)


def _nhs_number(nine: int) -> str | None:
    check = nhs_check_digit(f"{nine:09d}")
    return None if check is None else f"{nine:09d}{check}"


def _upn(eleven: int) -> str:
    tail = f"{eleven:012d}"
    return f"{upn_check_letter(tail)}{tail}"


# A field's ``format`` -> values of it (the codec refuses any other string there).
FORMATTED: dict[str, st.SearchStrategy[str]] = {
    "uuid": st.uuids().map(str),
    "nhs-number": st.integers(0, 999_999_999).map(_nhs_number).filter(bool).map(str),
    "upn": st.integers(0, 10**12 - 1).map(_upn),
}


def strategy(node: Node, fmt: str | None = None) -> st.SearchStrategy[Any]:
    if isinstance(node, Primitive):
        if node.logical == "timestamp-millis":
            return TIMESTAMPS
        if node.logical == "date":
            return st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1))
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False, allow_infinity=False),
            "double": st.floats(allow_nan=False, allow_infinity=False),
            "bytes": st.binary(max_size=40),
            "string": FORMATTED.get(fmt or "", TEXT),  # event-time is a long
        }[node.kind]
    if isinstance(node, Enum):
        return st.sampled_from(node.symbols)
    if isinstance(node, Fixed):
        return st.binary(min_size=node.size, max_size=node.size)
    if isinstance(node, Array):
        return st.lists(strategy(node.items), max_size=3)
    if isinstance(node, Map):
        return st.dictionaries(TEXT, strategy(node.values), max_size=3)
    if isinstance(node, Union):
        options: list[st.SearchStrategy[Any]] = []
        for branch in node.branches:
            s = strategy(branch, fmt)
            if isinstance(branch, Record) and len(node.non_null) > 1:
                s = s.map(_tagger(branch.fullname))
            options.append(s)
        return st.one_of(options)
    return st.fixed_dictionaries(
        {f.name: strategy(f.type, f.format) for f in node.fields}
    )


def _tagger(name: str) -> Any:
    # fastavro's tuple notation for a branch of a union of several records
    return lambda value: (name, value)


def records(name: str) -> st.SearchStrategy[Any]:
    return strategy(CODEC._entry(name).node)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
