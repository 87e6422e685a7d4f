"""The JSON reader's fast clearance (:func:`_provably_safe`) against its plain twin
(:func:`_scan`): whatever it clears, the scan would have cleared too."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.codec.jsontext import (
    MAX_DEPTH,
    JsonTextError,
    _Place,
    _provably_safe,
    _scan,
    read_events,
)

PIECES = st.sampled_from(['[', ']', '{', '}', '"', '"a[b"', '"NaN"', 'NaN', '-Infinity',
                          'Infinity', ',', ':', '1', ' ', '\\"', '"x\\\\"'])


def _scan_refuses(text: str) -> bool:
    try:
        _scan(text, _Place(text.encode(), text, 0, "t"))
    except JsonTextError:
        return True
    return False


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=2 * MAX_DEPTH + 10).map("".join))
def test_what_the_fast_check_clears_the_scan_clears(text: str) -> None:
    if _provably_safe(text):
        assert not _scan_refuses(text)


@pytest.mark.parametrize("text", [
    "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    '{"a": NaN}', '{"a": -Infinity}',
])
def test_what_the_fast_check_does_not_clear_is_still_refused(text: str) -> None:
    assert not _provably_safe(text)
    with pytest.raises(JsonTextError):
        read_events(text.encode())


def test_an_ordinary_event_is_cleared_without_the_scan() -> None:
    text = '{"summary": "found at NaNa\\u0027s flat [sic]", "n": [1, 2, {"k": "v"}]}'
    assert not _provably_safe(text)  # the letters NaN appear: the scan decides
    assert read_events(text.encode()).values[0]["n"][2] == {"k": "v"}
    assert _provably_safe('{"summary": "found", "n": [1, 2, {"k": "v"}]}')
