"""The root of every Safeshare error.

Each package keeps its own ``exceptions.py`` whose classes derive from
:class:`SafeshareError`, so a caller can catch one family or everything::

    SafeshareError
    ├── ConfigError                      (broker.config)
    ├── codec.exceptions.CodecError
    │   ├── SchemaError                  a schema file is wrong
    │   ├── UnknownSchemaError           fingerprint not in the registry
    │   ├── EncodingError                value does not fit the schema
    │   ├── DecodingError                bytes are not a valid single-object message
    │   └── IncompatibleSchemaError      a schema change breaks old readers
    ├── kafka.exceptions.KafkaError
    │   └── ClusterUnavailableError      no cluster could be had
    ├── policy.exceptions.PolicyError    policy file invalid (fail closed)
    └── audit.exceptions.AuditError
        └── VerificationError            a signature, proof or log does not verify

A withheld share is *not* an error: it is a policy decision value.
"""


class SafeshareError(Exception):
    """Base class of all errors raised by Safeshare."""


class ConfigError(SafeshareError):
    """Configuration is missing or malformed."""
