"""BoundedMemo: the one bounded cache (policy plans, codec copiers and varints)."""

import pytest

from broker._memo import BoundedMemo


def test_a_full_memo_forgets_its_oldest_entry_first() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    assert memo.remember("a", 1) == 1
    memo.remember("b", 2)
    memo.remember("b", 3)  # a key already held takes no room
    assert dict(memo) == {"a": 1, "b": 3}
    memo.remember("c", 4)
    assert dict(memo) == {"b": 3, "c": 4}


def test_a_memo_of_no_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        BoundedMemo(0)
