"""Kafka trouble in an operator's words, and kafka-python's own log records folded.

A broker restart makes kafka-python log hundreds of WARNING and ERROR lines
(connection refused, metadata failures, heartbeat errors, tracebacks) that
name no router, batch or consequence. :func:`fold_client_logs` routes the
``kafka`` logger to a :class:`ClientLogFolder` instead, which keeps a count
and the last line; the router then says once what the condition is, in
words an operator acts on (:func:`condition`), with the client's count and
last line folded in (:meth:`ClientLogFolder.summary`). With debug logging the
client's records are passed on as they are.
"""

from __future__ import annotations

import logging
import threading
import time

#: Conditions, as :func:`condition` names them.
BROKER_UNREACHABLE = "broker unreachable"
REMOVED_FROM_GROUP = (
    "this instance was removed from the group while stalled; its batch is replayed elsewhere"
)
FENCED = "another process took over this instance's transactional id"

_UNREACHABLE_MARKS = (
    "Unable to bootstrap", "Failed to update metadata", "KafkaConnectionError",
    "NodeNotReady", "no answer from the broker", "not acknowledged by the broker",
    "NoBrokersAvailable", "Connection refused", "CoordinatorNotAvailable",
    "NotCoordinator", "RequestTimedOut", "Timeout expired",
)
_REMOVED_MARKS = (
    "UnknownMemberId", "IllegalGeneration", "FencedInstanceId", "RebalanceInProgress",
    "CommitFailed",
)


def condition(exc: BaseException) -> str:
    """What a Kafka error means for a router, in an operator's words."""
    # Imported here: the CLI folds the client's logs for every command, and
    # most never touch Kafka.
    from broker.kafka.exceptions import (  # noqa: PLC0415
        CommitFailedError,
        KafkaError,
        KafkaTimeoutError,
        ProducerFencedError,
    )

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ProducerFencedError):
        return FENCED
    if isinstance(exc, CommitFailedError) or any(m in text for m in _REMOVED_MARKS):
        return REMOVED_FROM_GROUP
    if isinstance(exc, KafkaTimeoutError) or any(m in text for m in _UNREACHABLE_MARKS):
        return BROKER_UNREACHABLE
    if "TooLarge" in text:
        return "the broker refused a record as too large"
    if "Authorization" in text:
        return "the broker refused an operation (not authorized)"
    if isinstance(exc, KafkaError):
        return "Kafka error"
    return "error"


class ClientLogFolder(logging.Handler):
    """Counts kafka-python's warnings and errors and keeps the last one (no traceback)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._lock_ = threading.Lock()
        self._count = 0
        self._since: float | None = None
        self._last = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed client record is still counted
            message = str(record.msg)
        with self._lock_:
            if self._since is None:
                self._since = time.time()
            self._count += 1
            self._last = f"{record.name}: {message}"[:300]

    def summary(self) -> str:
        """``"; client: N warnings since HH:MM:SS, last: ..."`` (then starts over), or ""."""
        with self._lock_:
            count, since, last = self._count, self._since, self._last
            self._count, self._since, self._last = 0, None, ""
        if not count:
            return ""
        at = time.strftime("%H:%M:%S", time.gmtime(since or time.time()))
        return f"; client: {count} warning(s) since {at} UTC, last: {last}"


_folder: ClientLogFolder | None = None


def fold_client_logs() -> ClientLogFolder:
    """Send kafka-python's records (logger ``kafka``) to the folder, not the log.

    Idempotent. Not done when the ``kafka`` logger is set to debug (the caller
    asked for everything).
    """
    global _folder
    if _folder is None:
        _folder = ClientLogFolder()
        client = logging.getLogger("kafka")
        if not client.isEnabledFor(logging.DEBUG):
            client.addHandler(_folder)
            client.propagate = False
    return _folder


def client_summary() -> str:
    """The folded client records since the last call ("" if none, or not folding)."""
    return "" if _folder is None else _folder.summary()
