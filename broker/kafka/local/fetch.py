"""Fetching Kafka's jars from Maven Central, and the harness's own files.

``mvn dependency:copy-dependencies`` on ``deploy/kafka/pom.xml`` fetches
``kafka_2.13`` and its runtime closure (46 jars, 43 MB for 4.1.1) plus the
slf4j->log4j2 binding that ``kafka_2.13``'s pom does not bring, into
``<home>/kafka/<version>/libs`` (shared by every instance). The pom and the
log4j2 configuration ship as package data, so an installed package fetches
and runs the broker as a checkout does.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from broker import resources
from broker.kafka.exceptions import LocalKafkaError
from broker.kafka.local._os import file_lock

log = logging.getLogger(__name__)

_COMPLETE = ".complete"


def harness_file(name: str) -> Path:
    """A file of ``deploy/kafka`` (the Maven pom, the log4j2 configuration)."""
    return resources.path("deploy", "kafka", name)


def is_fetched(libs_dir: Path) -> bool:
    """True if a fetch into ``libs_dir`` finished (its marker file exists)."""
    return (libs_dir / _COMPLETE).is_file()


def fetch_jars(libs_dir: Path, version: str, timeout_s: float) -> Path:
    """Fetch Kafka ``version``'s jars into ``libs_dir`` unless cached; return it.

    Idempotent and safe to run from several processes at once (file lock).
    The jars land in a temporary directory first and are renamed into place
    only when Maven succeeded, so a killed fetch never leaves a half-filled
    libs dir that looks complete.
    """
    if is_fetched(libs_dir):
        return libs_dir
    root = libs_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / ".fetch.lock"):
        if is_fetched(libs_dir):
            return libs_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError("cannot fetch Kafka jars: `mvn` (Maven) is not on PATH")
        tmp = root / f"libs.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never",
            "-f", str(harness_file("pom.xml")),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            # Must be absolute: Maven resolves a relative one against the pom's dir.
            f"-DoutputDirectory={tmp.resolve()}",
        ]
        log.info("fetching Kafka %s jars with Maven into %s", version, libs_dir)
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalKafkaError(
                f"Maven did not fetch Kafka {version} within {timeout_s:.0f} s"
            ) from exc
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            out = (res.stdout + res.stderr).decode(errors="replace").strip().splitlines()
            raise LocalKafkaError(
                f"Maven could not fetch Kafka {version} (exit {res.returncode}): "
                + "\n".join(out[-30:])
            )
        main_jar = tmp / f"kafka_2.13-{version}.jar"
        if not main_jar.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalKafkaError(f"Maven succeeded but {main_jar.name} is missing")
        shutil.rmtree(libs_dir, ignore_errors=True)
        os.replace(tmp, libs_dir)
        (libs_dir / _COMPLETE).write_text(f"{version}\n")
        log.info("fetched Kafka %s in %.1f s", version, time.monotonic() - t0)
    return libs_dir
