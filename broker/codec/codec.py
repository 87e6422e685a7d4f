"""The codec: Avro single-object encoding of Safeshare records.

Wire format (Avro 1.11 specification, "Single-object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical
          |   Form, 8 bytes little-endian
          | Avro binary encoding of the record

A reader finds the writer schema by its fingerprint — among the current schemas
and every version kept under ``schemas/history`` — and resolves the data to
its own (current) schema ("Schema Resolution"), so events written before a
compatible schema change decode into today's shape. Unknown fingerprints are
refused, never guessed at (fail closed).

The hot paths (:meth:`Codec.encode`, :meth:`Codec.decode`, :meth:`Codec.redact`)
use fastavro's schemaless writer and reader with schemas parsed once, and
validators and redaction plans compiled once per schema; :meth:`Codec.decode`
reads a body written with the current schema through a reader generated for
that schema (``_read.py``), handing fastavro whatever that reader declines.
The router's path skips re-validation where the record is valid by
construction: :meth:`Codec.written` encodes a decoded event once with a
generated writer (``_write.py``) and splices each subscriber's redacted copy
from those bytes; :meth:`Codec.body_trusted` writes a record the caller built
from checked values. Both are byte-for-byte fastavro's output (tests compare
them), and fall back to the validating path for anything they cannot place.
:meth:`Codec.decode_for_routing` goes one step further: when the inbound bytes
are already exactly what that writer would write for the decoded event (the
same schema, every encoding choice canonical, ``_read.py``), it notes the cuts
while reading and splices the copies from the input bytes themselves.
"""

from __future__ import annotations

import copy
import functools
import io
import struct
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any, Final, Protocol

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from broker.codec import _json, _read, _schema, _validate, _write
from broker.codec._fingerprint import HEADER_SIZE, MAGIC
from broker.codec._load import LoadedSchemas, SchemaVersion, _Entry, _leaf_classes, load_dir
from broker.codec._redact import Allowed, RedactionPlan
from broker.codec.exceptions import (
    DecodingError,
    EncodingError,
    SchemaError,
    UnknownSchemaError,
)
from broker.codec.limits import too_big
from broker.codec.times import DEFAULT_BOUNDS, TimeBounds, TimeCheck, Window, compile_time_check

DEFAULT_SCHEMA: Final = "safeshare.ConcernEvent"

#: Largest message the codec encodes or decodes. Kafka's default ``message.max.bytes``
#: is about 1 MiB; a safeguarding event is a few kilobytes. The limit bounds what a
#: hostile message can make the decoder allocate.
DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_576

# What fastavro raises on bad input; anything else is a bug and propagates.
_READ_ERRORS: Final = (
    EOFError,
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    struct.error,
    SchemaResolutionError,
    RecursionError,
    MemoryError,
)
_WRITE_ERRORS: Final = (ValueError, TypeError, OverflowError, AttributeError, KeyError)


class Codec:
    """Encodes, decodes, converts and redacts Safeshare records.

    Build one with :meth:`from_dir` or :meth:`default` and share it: it is
    immutable apart from caches of compiled validators and plans, which are
    safe to fill from several threads (the worst case compiles one twice).
    """

    def __init__(
        self,
        loaded: LoadedSchemas,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        check_rules: bool = True,
    ) -> None:
        if check_rules and loaded.lint:
            raise SchemaError(
                f"{len(loaded.lint)} schema rule(s) broken: "
                + "; ".join(f"{o}.{f}: {r}" if f else f"{o}: {r}" for o, f, r in loaded.lint)
            )
        if max_message_bytes < HEADER_SIZE:
            raise ValueError("max_message_bytes is smaller than the single-object header")
        self.max_message_bytes = max_message_bytes
        self.schemas_dir = loaded.directory
        self._current = loaded.current
        self._history = loaded.history
        self._writers: dict[bytes, _Entry] = {}
        for entry in loaded.current.values():
            self._writers[entry.fingerprint] = entry
        for versions in loaded.history.values():
            for entry in versions.values():
                # A kept version equal to the current schema decodes as the current one.
                self._writers.setdefault(entry.fingerprint, entry)
        self._checks: dict[str, _validate.Check] = {}
        self._format_checks: dict[str, _validate.Check | None] = {}
        self._time_checks: dict[str, TimeCheck | None] = {}
        # The plausible-time window of the last check: (now_ms, bounds, window).
        self._last_window: tuple[int, TimeBounds, Window] | None = None
        self._from_json: dict[str, _json.Convert] = {}
        self._to_json: dict[str, _json.Render] = {}
        self._plans: dict[str, RedactionPlan] = {}
        self._leaves: dict[str, dict[str, str]] = {}
        self._fast: dict[tuple[str, bool], _write.WriteFn] = {}
        self._readers: dict[str, _read.ReadFn | None] = {}
        self._routing_readers: dict[str, _read.RoutingReadFn | None] = {}

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_dir(
        cls, schemas_dir: Path, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> Codec:
        """Load ``schemas_dir`` (current schemas) and ``schemas_dir/history`` (older
        writer schemas still to be read). Raises :class:`SchemaError` if a file is
        broken or a schema breaks Safeshare's rules (fail closed: a field without a
        data class could not be redacted)."""
        return cls(load_dir(Path(schemas_dir)), max_message_bytes=max_message_bytes)

    @classmethod
    def default(cls) -> Codec:
        """The codec for the project's schemas directory (``broker.config``), loaded once."""
        return _default_codec()

    # -- schemas -----------------------------------------------------------------------

    def _entry(self, schema: str) -> _Entry:
        entry = self._current.get(schema)
        if entry is None and "." not in schema:
            entry = self._current.get(f"{_schema.NAMESPACE}.{schema}")
        if entry is None:
            raise UnknownSchemaError(f"no record schema named {schema}")
        return entry

    def names(self) -> list[str]:
        """Full names of every current record schema."""
        return sorted(self._current)

    def raw_schemas(self) -> dict[str, dict[str, Any]]:
        """Each current record schema as self-contained (expanded) JSON, docs and
        ``dataClass`` labels included — what another Avro implementation needs."""
        return {name: copy.deepcopy(e.raw) for name, e in sorted(self._current.items())}

    def canonical_form(self, schema: str = DEFAULT_SCHEMA) -> str:
        """The Parsing Canonical Form (Avro 1.11 spec) of the expanded schema."""
        return self._entry(schema).canonical

    def fingerprint(self, schema: str = DEFAULT_SCHEMA) -> bytes:
        """CRC-64-AVRO of the expanded schema's canonical form, 8 bytes little-endian."""
        return self._entry(schema).fingerprint

    def versions(self) -> list[SchemaVersion]:
        """Every writer schema the codec can decode: current ones and kept versions."""
        out = [SchemaVersion(e.name, None, e.fingerprint) for e in self._current.values()]
        for versions in self._history.values():
            out.extend(SchemaVersion(e.name, e.version, e.fingerprint) for e in versions.values())
        return sorted(out, key=lambda v: (v.name, v.version is None, v.version or 0))

    def _writer(self, data: bytes) -> _Entry:
        size = len(data)
        if size > self.max_message_bytes:
            raise DecodingError(
                f"message is {size} bytes, over the limit of {self.max_message_bytes}"
            )
        if size < HEADER_SIZE:
            raise DecodingError(
                f"message is {size} bytes, shorter than the {HEADER_SIZE}-byte single-object header"
            )
        if data[:2] != MAGIC:
            raise DecodingError("not an Avro single-object message (no C3 01 marker)")
        fingerprint = bytes(data[2:HEADER_SIZE])
        entry = self._writers.get(fingerprint)
        if entry is None:
            raise UnknownSchemaError(f"no known schema has fingerprint {fingerprint.hex()}")
        return entry

    def schema_name_of(self, data: bytes) -> str:
        """Full name of the record schema a message was written with (from its fingerprint)."""
        return self._writer(data).name

    # -- encoding and decoding ---------------------------------------------------------

    def _check(self, entry: _Entry) -> _validate.Check:
        check = self._checks.get(entry.name)
        if check is None:
            check = self._checks[entry.name] = _validate.compile_check(entry.node)
        return check

    def validate(self, record: Any, schema: str = DEFAULT_SCHEMA) -> None:
        """Raise :class:`EncodingError` naming every problem's path if ``record`` does
        not fit the in-memory shape of ``schema`` (docs/CONTRACTS.md)."""
        entry = self._entry(schema)
        errors: list[str] = []
        self._check(entry)(record, errors)
        if errors:
            raise EncodingError(errors[: _validate.MAX_PROBLEMS])

    def check_times(
        self,
        record: Any,
        now_ms: int,
        bounds: TimeBounds = DEFAULT_BOUNDS,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        """Raise :class:`EncodingError` naming each time in ``record`` that is not
        plausible at ``now_ms`` (:mod:`broker.codec.times`: before the floor, in
        the future beyond the skew, occurred after reported). For where an event
        enters (publish, the API, the router); decoding never asks, so stored
        data reads back whatever the date."""
        entry = self._entry(schema)
        try:
            check = self._time_checks[entry.name]
        except KeyError:
            check = self._time_checks[entry.name] = compile_time_check(entry.node)
        if check is None:
            return
        errors: list[str] = []
        last = self._last_window  # events come several to a millisecond at full speed
        if last is not None and last[0] == now_ms and last[1] is bounds:
            window = last[2]
        else:
            window = Window(now_ms, bounds)
            self._last_window = (now_ms, bounds, window)
        check(record, window, errors)
        if errors:
            raise EncodingError(errors[: _validate.MAX_PROBLEMS])

    def encode(
        self, record: Mapping[str, Any], schema: str = DEFAULT_SCHEMA, *, limit: int | None = None
    ) -> bytes:
        """Validate ``record`` and return its single-object encoding, refusing one
        over ``limit`` bytes (default and at most ``max_message_bytes``)."""
        entry = self._entry(schema)
        errors: list[str] = []
        self._check(entry)(record, errors)
        if errors:
            raise EncodingError(errors[: _validate.MAX_PROBLEMS])
        out = io.BytesIO()
        out.write(entry.header)
        try:
            schemaless_writer(out, entry.parsed, record)
        except _WRITE_ERRORS as exc:
            # The validator passed, so this is a gap in it; fastavro's message may
            # quote the value, so only its type is passed on.
            raise EncodingError(
                f"(root): {entry.name} could not be encoded ({type(exc).__name__})"
            ) from None
        data = out.getvalue()
        most = self.max_message_bytes if limit is None else min(limit, self.max_message_bytes)
        if len(data) > most:
            raise EncodingError(too_big(record, len(data), most))
        return data

    def decode(self, data: bytes, schema: str = DEFAULT_SCHEMA) -> dict[str, Any]:
        """Decode a single-object message into the in-memory shape of ``schema``.

        Raises :class:`UnknownSchemaError` for an unknown fingerprint, and
        :class:`DecodingError` for anything else wrong: no marker, a different
        record type, a body that is truncated, garbage, not valid UTF-8, or
        followed by trailing bytes, or values the schema's rules refuse (e.g. an
        ``event_id`` that is not a UUID). Work is bounded by ``max_message_bytes``:
        a length or count that lies runs into the end of the buffer, and no array
        item type can be zero bytes wide (a schema rule), so no count loops for long.

        A body written with the current schema is read by the generated reader,
        which returns what fastavro would; bytes it declines (anything invalid, or
        an encoding no writer produces) are read by fastavro, whose verdict and
        message stand — so what is returned and what is refused are fastavro's.
        """
        return self._decode(data, schema, cuts=False)[0]

    def decode_for_routing(
        self, data: bytes, schema: str = DEFAULT_SCHEMA
    ) -> tuple[dict[str, Any], Redactable]:
        """:meth:`decode`, and the record ready for redacted copies (:meth:`written`).

        The record, and every error raised, are :meth:`decode`'s. The second
        value's ``redacted(classes)`` is byte-for-byte ``written(record,
        schema).redacted(classes)``. When ``data`` is the canonical encoding of
        the record with the current schema — exactly the bytes the writer would
        write (``_read.py`` lists what that takes) — it is spliced from ``data``
        itself, with the cuts noted while reading, and the record is never
        encoded again. Otherwise (an older schema, a multi-block array, a
        non-minimal varint ...) it is :meth:`written` of the record, made here.
        Either way the copies are of the record as decoded from ``data``: the
        two come out together, so no other bytes can be paired with the record,
        and a caller that changes the dict later changes neither path's copies.
        """
        record, written = self._decode(data, schema, cuts=True)
        if written is None:
            return record, self.written(record, schema)
        return record, written

    def _decode(
        self, data: bytes, schema: str, *, cuts: bool
    ) -> tuple[dict[str, Any], _write.FromInput | None]:
        """:meth:`decode`; with ``cuts``, and ``data`` canonical, also the record's
        bytes and cuts (the routing reader's; None when it declined)."""
        reader = self._entry(schema)
        writer = self._writer(data)
        if writer.name != reader.name:
            raise DecodingError(f"message holds a {writer.name}, not a {reader.name}")
        record: dict[str, Any] | None = None
        written: _write.FromInput | None = None
        if writer is reader:
            if cuts:
                found = self._read_routing(data, writer)
                if found is not None:
                    record, written = found
            if record is None:
                record = self._read_fast(data, writer)
        if record is None:
            record = self._read_fastavro(data, writer, reader)
        if reader.name not in self._format_checks:
            self._format_checks[reader.name] = _validate.compile_format_check(reader.node)
        format_check = self._format_checks[reader.name]
        if format_check is not None:
            errors: list[str] = []
            format_check(record, errors)
            if errors:
                raise DecodingError(errors[: _validate.MAX_PROBLEMS])
        return record, written

    def _reader(self, entry: _Entry) -> _read.ReadFn | None:
        try:
            return self._readers[entry.name]
        except KeyError:
            try:
                read: _read.ReadFn | None = _read.compile_reader(entry.node)
            except _read.Unsupported:
                read = None
            self._readers[entry.name] = read
            return read

    def _read_routing(
        self, data: bytes, entry: _Entry
    ) -> tuple[dict[str, Any], _write.FromInput] | None:
        """The body read by the routing reader, with its bytes and cuts, when
        ``data`` holds the writer's own encoding of it and nothing after it;
        None for anything else, which the plain readers then decide (and word
        any error) exactly as :meth:`decode` does."""
        if self._reader(entry) is None:
            return None  # no generated reader: fastavro reads, the writer writes
        try:
            read = self._routing_readers[entry.name]
        except KeyError:
            try:
                read = _read.compile_routing_reader(entry.node)
            except _read.Unsupported:
                read = None
            self._routing_readers[entry.name] = read
        if read is None:
            return None
        if type(data) is not bytes:
            data = bytes(data)  # slices of a bytearray or memoryview are not bytes
        try:
            record, end, cuts = read(data, HEADER_SIZE)
        except _FAST_READ_ERRORS:
            return None
        if end != len(data):
            return None  # trailing bytes: refused below, in decode's words
        return record, _write.FromInput(data[HEADER_SIZE:], cuts)

    def _read_fast(self, data: bytes, entry: _Entry) -> dict[str, Any] | None:
        """The body read by the generated reader (``_read.py``) when it was written
        with the reader's own schema; None when that reader declines the bytes
        (not a writer's plain encoding, or not valid at all) and fastavro must
        decide — so what is refused, and why, is fastavro's word as before."""
        read = self._reader(entry)
        if read is None:
            return None
        if type(data) is not bytes:
            data = bytes(data)  # slices of a bytearray or memoryview are not bytes
        try:
            record, end = read(data, HEADER_SIZE)
        except _FAST_READ_ERRORS:
            return None
        trailing = len(data) - end
        if trailing:
            raise DecodingError(f"{trailing} trailing byte(s) after the {entry.name} body")
        return record

    def _read_fastavro(self, data: bytes, writer: _Entry, reader: _Entry) -> dict[str, Any]:
        """The body read by fastavro, resolved to ``reader`` if written with another schema."""
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(
                buffer,
                writer.parsed,
                None if writer is reader else reader.parsed,
                return_record_name=True,
                return_record_name_override=True,
            )
        except _READ_ERRORS as exc:
            raise DecodingError(f"body is not a valid {writer.name}: {_why(exc)}") from None
        trailing = len(data) - buffer.tell()
        if trailing:
            raise DecodingError(f"{trailing} trailing byte(s) after the {writer.name} body")
        if not isinstance(record, dict):  # pragma: no cover - the schema is a record
            raise DecodingError(f"body is not a valid {writer.name}: not a record")
        return record

    # -- trusted fast path (the router's) ---------------------------------------------

    def header(self, schema: str = DEFAULT_SCHEMA) -> bytes:
        """The single-object header (marker and fingerprint) of ``schema``."""
        return self._entry(schema).header

    def _fast_writer(self, entry: _Entry, cuts: bool) -> _write.WriteFn:
        fn = self._fast.get((entry.name, cuts))
        if fn is None:
            fn = self._fast[(entry.name, cuts)] = _write.compile_writer(entry.node, cuts=cuts)
        return fn

    def body_trusted(self, record: Mapping[str, Any], schema: str = DEFAULT_SCHEMA) -> bytes:
        """The Avro body of a record already known valid (no header, no validation).

        For records the codec decoded or that passed :meth:`validate`; what the
        fast writer cannot place goes through :meth:`encode`, which validates
        (and raises :class:`EncodingError` naming the problem).
        """
        entry = self._entry(schema)
        try:
            body, _ = self._fast_writer(entry, False)(record)
        except _FAST_ERRORS:
            return self.encode(record, entry.name)[HEADER_SIZE:]
        return bytes(body)

    def encode_trusted(self, record: Mapping[str, Any], schema: str = DEFAULT_SCHEMA) -> bytes:
        """:meth:`encode` of a record the caller built from checked values, without
        validating it again: the header and :meth:`body_trusted` (the same bytes;
        tests hold the two equal). The size limit still holds."""
        entry = self._entry(schema)
        data = entry.header + self.body_trusted(record, entry.name)
        if len(data) > self.max_message_bytes:
            raise EncodingError(too_big(record, len(data), self.max_message_bytes))
        return data

    def written(self, record: Mapping[str, Any], schema: str = DEFAULT_SCHEMA) -> Redactable:
        """Encode a decoded record once, for many redacted copies.

        ``written(r).redacted(classes)`` is byte-for-byte the body of
        ``encode(redact(r, classes)[0])`` (tests hold the two paths equal) at the
        cost of splicing bytes, not of copying and encoding the record again.
        """
        entry = self._entry(schema)
        try:
            body, cuts = self._fast_writer(entry, True)(record)
        except _FAST_ERRORS:
            return _Redone(self, record, entry.name)
        return _write.Written(bytes(body), cuts)

    # -- JSON --------------------------------------------------------------------------

    def from_json(self, obj: Any, schema: str = DEFAULT_SCHEMA) -> dict[str, Any]:
        """Convert a human-friendly JSON object (see ``broker/codec/_json.py``) into
        the in-memory shape, raising :class:`EncodingError` with every problem's path."""
        entry = self._entry(schema)
        convert = self._from_json.get(entry.name)
        if convert is None:
            convert = self._from_json[entry.name] = _json.compile_from_json(entry.node)
        errors: list[str] = []
        record = convert(obj, errors)
        if errors:
            raise EncodingError(errors[: _validate.MAX_PROBLEMS])
        assert isinstance(record, dict)
        return record

    def to_json(self, record: Mapping[str, Any], schema: str = DEFAULT_SCHEMA) -> dict[str, Any]:
        """The inverse of :meth:`from_json`: a JSON-serialisable dict for printing."""
        entry = self._entry(schema)
        self.validate(record, entry.name)
        render = self._to_json.get(entry.name)
        if render is None:
            render = self._to_json[entry.name] = _json.compile_to_json(entry.node)
        out = render(record)
        assert isinstance(out, dict)
        return out

    # -- data classes and redaction ----------------------------------------------------

    def data_classes(self, schema: str = DEFAULT_SCHEMA) -> dict[str, str]:
        """``{path: data class}`` for every leaf field (docs/CONTRACTS.md, "Field paths")."""
        entry = self._entry(schema)
        leaves = self._leaves.get(entry.name)
        if leaves is None:
            leaves = self._leaves[entry.name] = _leaf_classes(entry.node)
        return dict(leaves)

    def redact(
        self,
        record: Mapping[str, Any],
        allowed: Allowed,
        schema: str = DEFAULT_SCHEMA,
    ) -> tuple[dict[str, Any], list[str]]:
        """A deep copy of ``record`` in which every field whose (path, data class) is
        not allowed is None, and the paths of those that held a value.

        ``allowed`` is a set of data classes, or a function ``(path, data_class) ->
        bool``. ``metadata`` is always kept. A field not allowed is nulled whole,
        records and arrays included; an allowed record is copied and its fields
        judged in turn. The record is assumed valid (decoded or validated).
        """
        entry = self._entry(schema)
        plan = self._plans.get(entry.name)
        if plan is None:
            plan = self._plans[entry.name] = RedactionPlan(entry.node)
        return plan.redact(record, allowed)


# What the generated reader raises on bytes it declines (fastavro then decides).
_FAST_READ_ERRORS: Final = (*_READ_ERRORS, _read.Defer)

# What a trusted record the fast writer cannot place raises (the fallback validates).
_FAST_ERRORS: Final = (_write.Unsupported, AttributeError, KeyError, TypeError, ValueError)


class Redactable(Protocol):
    def redacted(self, allowed: Set[str]) -> bytes: ...


class _Redone:
    """The slow path of :meth:`Codec.written`: copy, validate and encode each view."""

    def __init__(self, codec: Codec, record: Mapping[str, Any], schema: str) -> None:
        self._codec, self._record, self._schema = codec, record, schema

    def redacted(self, allowed: Set[str]) -> bytes:
        copy_, _ = self._codec.redact(self._record, allowed, self._schema)
        return self._codec.encode(copy_, self._schema)[HEADER_SIZE:]


def _why(exc: BaseException) -> str:
    # fastavro's messages can quote decoded data, so describe the kind of failure only.
    if isinstance(exc, EOFError):
        return "truncated (a length or the data runs past the end)"
    if isinstance(exc, UnicodeDecodeError):
        return "a string is not valid UTF-8"
    if isinstance(exc, SchemaResolutionError):
        return "cannot be resolved to the reader schema (e.g. an enum symbol the reader lacks)"
    if isinstance(exc, IndexError):
        # fastavro indexes the bytes it read: a varint cut short, or a union index
        # past the branches.
        return "truncated or malformed (a number runs past the end or is out of range)"
    if isinstance(exc, RecursionError | MemoryError):
        return "too deeply nested or too large"
    return f"malformed ({type(exc).__name__})"


@functools.cache
def _default_codec() -> Codec:
    from broker import config

    return Codec.from_dir(config.load().schemas_dir)
