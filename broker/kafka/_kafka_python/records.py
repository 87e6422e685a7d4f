"""One record appended to kafka-python's open batch (message format v2), at a third of the cost.

kafka-python's ``DefaultRecordBatchBuilder.append`` checks the argument types,
reads the clock, builds the record in a scratch ``bytearray`` a varint call at a
time, copies it into the batch and returns a metadata object; the router, which
appends two to five records per event through :class:`KeyedAppender`, needs
none of that but the bytes. :func:`append_record` writes the same bytes (the
v2 record layout of KIP-98: length, attributes, timestamp delta, offset delta,
key, value, no headers) with small varints from a table, in one join, and keeps
the builder's counters as its ``append`` does. The first record of a batch,
which sets the batch's base timestamp, goes through kafka-python's own append.

Reached only through :class:`KeyedAppender`, which exists only when
:data:`~broker.kafka._kafka_python.PINNED`. :func:`append_record_plain` is
kafka-python's append, the plain twin; tests/test_kafka_records.py holds the
batches the two build byte-for-byte equal.
"""

from __future__ import annotations

from typing import Any

from broker.codec._write import long_bytes

#: The varints of 0 .. 8191 (at most two bytes each), indexed: lengths and deltas are
#: mostly these. A Kafka record varint is Avro's long encoding (zig-zag, then
#: base-128 little-endian), so the codec's encoder writes the rest.
_SMALL = tuple(long_bytes(i) for i in range(1 << 13))
_N_SMALL = len(_SMALL)
_NO_HEADERS: list[tuple[str, bytes]] = []


def append_record(records: Any, timestamp_ms: int, key: bytes, value: bytes) -> bool:
    """Append to ``records`` (a ``MemoryRecordsBuilder`` of format v2); False if
    the batch is full or closed (as ``append`` returning None)."""
    builder = records._builder
    if records._magic != 2 or records._closed or builder._first_timestamp is None:
        return append_record_plain(records, timestamp_ms, key, value)
    offset = records._next_offset
    small, n = _SMALL, _N_SMALL
    delta = timestamp_ms - builder._first_timestamp
    key_len, value_len = len(key), len(value)
    v_delta = small[delta] if 0 <= delta < n else long_bytes(delta)
    v_offset = small[offset] if offset < n else long_bytes(offset)
    v_key = small[key_len] if key_len < n else long_bytes(key_len)
    v_value = small[value_len] if value_len < n else long_bytes(value_len)
    # attributes + the four varints + key + value + a header count of 0
    size = 2 + len(v_delta) + len(v_offset) + len(v_key) + key_len + len(v_value) + value_len
    v_size = small[size] if size < n else long_bytes(size)
    buffer = builder._buffer
    if len(v_size) + size + len(buffer) > builder._batch_size:
        return False
    buffer += b"".join((v_size, b"\x00", v_delta, v_offset, v_key, key, v_value, value, b"\x00"))
    if builder._max_timestamp < timestamp_ms:
        builder._max_timestamp = timestamp_ms
    builder._num_records += 1
    builder._last_offset = offset
    records._next_offset = offset + 1
    return True


def append_record_plain(records: Any, timestamp_ms: int, key: bytes, value: bytes) -> bool:
    """kafka-python's append: the plain twin of :func:`append_record`."""
    return records.append(timestamp_ms, key, value, _NO_HEADERS) is not None
