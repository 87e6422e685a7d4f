"""What the local broker needs of the operating system: private and atomic writes,
a lock between processes, live pids, free ports, the java executable."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from broker.kafka.exceptions import LocalKafkaError
from broker.kafka.local.properties import HOST


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600 from the first byte)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new, never half."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("cannot run Kafka: `java` (17 or newer) is not on PATH")
    return java


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a zombie is dead, just unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # Field 3, after the parenthesised command name (which may contain spaces).
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def port_free(port: int) -> bool:
    """True if we can bind ``port`` on HOST the way the JVM does (SO_REUSEADDR).

    With SO_REUSEADDR a port whose old connections linger in TIME_WAIT after
    a stop counts as free, exactly as it does for Kafka's own server socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS considers free right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
