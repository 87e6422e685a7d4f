"""Errors of the codec. The tree (all under :class:`broker.errors.SafeshareError`)::

    CodecError
    ├── SchemaError              a schema file is wrong (unparsable, unlabelled field, ...)
    ├── UnknownSchemaError       a fingerprint or schema name the codec does not know
    ├── EncodingError            a value does not fit the schema (names the field path)
    ├── DecodingError            bytes are not a valid single-object message
    └── IncompatibleSchemaError  a schema change would stop old data being read

Messages name the field path and what is wrong with it, never the field's value:
values may be a child's personal data and messages end up in logs.
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.errors import SafeshareError


class CodecError(SafeshareError):
    """Base class of codec errors."""


class SchemaError(CodecError):
    """A schema file is missing, malformed or breaks a Safeshare schema rule."""


class UnknownSchemaError(CodecError):
    """A message's fingerprint, or a requested schema name, is not known to the codec.

    Fail closed: a message that cannot be tied to a schema is never guessed at.
    """


class _ProblemsError(CodecError):
    """An error made of one or more ``path: problem`` lines."""

    def __init__(self, problems: Iterable[str] | str) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(message)


class EncodingError(_ProblemsError):
    """A record does not fit its schema.

    ``problems`` holds one ``path: what is wrong`` line per problem found, e.g.
    ``subject.local_authority: required string missing``.
    """


class DecodingError(_ProblemsError):
    """Bytes are not a valid single-object message for the expected schema."""


class IncompatibleSchemaError(_ProblemsError):
    """A current schema cannot read data written with a kept older version."""
