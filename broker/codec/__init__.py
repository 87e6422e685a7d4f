"""The Avro event contract: single-object encoding, schema resolution, data classes.

Public surface::

    Codec                      encode / decode / from_json / to_json / redact / ...
    check_compatibility        -> list[Problem]; assert_compatible raises
    CodecError and its family  (broker.codec.exceptions)

Schemas live in ``schemas/`` (one named type per ``.avsc``) with every version
ever written kept under ``schemas/history/<Name>/<n>.avsc``.
"""

from broker.codec._load import SchemaVersion
from broker.codec._write import long_bytes
from broker.codec.codec import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SCHEMA, Codec
from broker.codec.compat import Problem, assert_compatible, check_compatibility
from broker.codec.exceptions import (
    CodecError,
    DecodingError,
    EncodingError,
    IncompatibleSchemaError,
    SchemaError,
    UnknownSchemaError,
)
from broker.codec.limits import MAX_EVENT_BYTES, event_size_problem

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_SCHEMA",
    "MAX_EVENT_BYTES",
    "Codec",
    "CodecError",
    "DecodingError",
    "EncodingError",
    "IncompatibleSchemaError",
    "Problem",
    "SchemaError",
    "SchemaVersion",
    "UnknownSchemaError",
    "assert_compatible",
    "check_compatibility",
    "event_size_problem",
    "long_bytes",
]
