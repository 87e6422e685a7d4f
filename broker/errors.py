"""The root of every Safeshare error.

Each package keeps its own ``exceptions.py`` whose classes derive from
:class:`SafeshareError`, so a caller can catch one family or everything. The
whole tree, one line per class (``tests/test_errors.py`` holds it to the real
hierarchy)::

    SafeshareError                  (broker.errors) the root
    ├── ConfigError                 (broker.errors) configuration missing or malformed
    ├── AuditError                  (broker.audit.exceptions)
    │   ├── KeyFormatError          a vkey, private key or key list entry is malformed
    │   ├── VerificationError       a signature, proof, checkpoint, leaf or bundle does not verify
    │   │   ├── BrokenLogError      the log as stored in Kafka is broken; nothing more is signed
    │   │   ├── InvalidSignatureError  a trusted key's signature line is wrong
    │   │   ├── MalformedError      bytes claiming one of our formats do not follow it
    │   │   ├── SplitViewError      two checkpoints of one log cannot both be true
    │   │   ├── StaleCheckpointError  a witness asked to cosign a smaller checkpoint
    │   │   └── UnverifiedNoteError  a note parsed, but no trusted key signed it
    │   ├── WitnessConflictError    a consistency proof from a size the witness is not at
    │   └── WitnessStateError       a witness cannot read or write its state file
    ├── CertificateError            (broker.gateway.pki) a gateway certificate unusable
    ├── CodecError                  (broker.codec.exceptions)
    │   ├── SchemaError             a schema file is missing, malformed or breaks a rule
    │   ├── UnknownSchemaError      a fingerprint or schema name the codec does not know
    │   └── _ProblemsError          one or more ``path: problem`` lines
    │       ├── DecodingError       bytes are not a valid single-object message
    │       ├── EncodingError       a record does not fit its schema
    │       │   ├── EventRefused    (broker.intake) an event the router would not route as sent
    │       │   └── JsonTextError   (broker.codec.jsontext) not acceptable JSON text (byte offset)
    │       └── IncompatibleSchemaError  a schema change breaks readers of kept versions
    ├── FeedDecryptionError         (broker.signing.feeds) a feed record cannot be opened
    ├── FeedKeyError                (broker.signing.feeds) a feed key is malformed or unusable
    ├── IdentityError               (broker.identity.exceptions) partnership keys unusable
    ├── KafkaError                  (broker.kafka.exceptions)
    │   ├── ClusterUnavailableError  no cluster could be had
    │   ├── CommitFailedError       the group rebalanced; offsets not committed
    │   ├── KafkaTimeoutError       the cluster did not answer in time
    │   ├── LocalKafkaError         the project's own broker could not be fetched or run
    │   ├── ProducerFencedError     a newer producer has our transactional id; close
    │   ├── TopicError              a topic could not be created, changed or described
    │   └── TransactionAbortedError  only an abort can clear the transaction
    ├── PolicyError                 (broker.policy.exceptions) policy invalid: fail closed
    ├── RoutingError                (broker.routing.exceptions) the router cannot go on
    └── SignatureError              (broker.signing.events) an event's signature is wrong

A withheld share is *not* an error: it is a policy decision value.
"""


class SafeshareError(Exception):
    """Base class of all errors raised by Safeshare."""


class ConfigError(SafeshareError):
    """Configuration is missing or malformed."""
