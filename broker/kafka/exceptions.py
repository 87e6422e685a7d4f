"""Errors of the Kafka layer, and the one place kafka-python's errors are translated.

No package outside :mod:`broker.kafka` imports kafka-python, so nothing outside
it should ever have to catch a kafka-python exception either. Every wrapper in
:mod:`broker.kafka` runs its kafka-python calls inside :func:`translated`,
which re-raises them as the classes below (the original stays as ``__cause__``)::

    SafeshareError
    └── KafkaError                    anything that went wrong talking to Kafka
        ├── ClusterUnavailableError   no cluster could be had (obtain_cluster)
        ├── LocalKafkaError           the project's own broker could not be fetched/started
        ├── KafkaTimeoutError         the cluster did not answer in time (retriable)
        ├── TopicError                a topic could not be created/changed/deleted
        ├── ProducerFencedError       another producer took over our transactional id (fatal)
        ├── TransactionAbortedError   the current transaction must be aborted (abortable)
        └── CommitFailedError         the group rebalanced; offsets were not committed

``retriable`` tells a caller whether trying the same thing again may succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import kafka.errors as _kerr

from broker.errors import SafeshareError


class KafkaError(SafeshareError):
    """Something went wrong talking to Kafka."""

    retriable: bool = False


class ClusterUnavailableError(KafkaError):
    """No Kafka cluster could be had; the message says why each way failed."""


class LocalKafkaError(KafkaError):
    """The project's own broker could not be fetched, formatted, started or stopped."""


class KafkaTimeoutError(KafkaError):
    """The cluster did not answer in time (broker down, or still starting)."""

    retriable = True


class TopicError(KafkaError):
    """A topic could not be created, reconfigured, described or deleted."""


class ProducerFencedError(KafkaError):
    """A newer producer with the same transactional id exists; this one must close.

    This is how a restarted router fences its zombie: the zombie gets this error
    and must stop without writing anything else.
    """


class TransactionAbortedError(KafkaError):
    """The current transaction failed in a way that only an abort can clear.

    Abort it, rewind the consumer to the last committed offsets and replay.
    """

    retriable = True


class CommitFailedError(KafkaError):
    """The consumer group rebalanced, so these offsets were not committed."""

    retriable = True


def translate(exc: BaseException) -> KafkaError:
    """Map a kafka-python exception (or socket-level error) to one of ours.

    Already-translated errors come back unchanged. The message keeps
    kafka-python's class name, which is what a human searches for.
    """
    if isinstance(exc, KafkaError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, _kerr.ProducerFencedError | _kerr.InvalidProducerEpochError):
        return ProducerFencedError(text)
    if isinstance(exc, _kerr.TransactionAbortableError):
        return TransactionAbortedError(text)
    if isinstance(exc, _kerr.CommitFailedError):
        return CommitFailedError(text)
    if isinstance(exc, _kerr.KafkaTimeoutError | TimeoutError):
        return KafkaTimeoutError(text)
    if isinstance(exc, _kerr.TopicAlreadyExistsError | _kerr.InvalidTopicError
                  | _kerr.InvalidPartitionsError | _kerr.InvalidReplicationFactorError
                  | _kerr.InvalidConfigurationError | _kerr.PolicyViolationError):
        return TopicError(text)
    out = KafkaError(text)
    out.retriable = bool(getattr(exc, "retriable", False)) or isinstance(exc, ConnectionError)
    return out


@contextmanager
def translated(what: str = "") -> Iterator[None]:
    """Run a block of kafka-python calls, re-raising its errors as ours.

    ``what`` (e.g. ``"create topics"``) prefixes the message so a failure says
    which operation it interrupted.
    """
    try:
        yield
    except KafkaError:
        raise
    except (_kerr.KafkaError, OSError, TimeoutError) as exc:
        out = translate(exc)
        if what:
            out.args = (f"{what}: {out.args[0] if out.args else ''}",)
        raise out from exc
