"""Apache Avro's Java reference implementation for the tests: fetch, compile, run.

``tests/data/avro/java/AvroJavaCheck.java`` reads single-object messages with Avro
Java's ``BinaryMessageDecoder`` (its header says how). Its jars (``org.apache.avro:avro``
and runtime closure) come from Maven Central with ``mvn`` on
``tests/data/avro/java/pom.xml``, as ``broker/kafka/local/fetch.py`` fetches Kafka's,
into ``<home>/avro-java/<version>/libs`` (``var/`` in a checkout) once; the class file is
kept beside them under the SHA-256 of the source, so a second run fetches and compiles
nothing. A missing tool is one :class:`AvroJavaError` line, never a skip.
No tests live here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from broker.kafka.local._os import file_lock

AVRO_VERSION = "1.12.2"
HERE = Path(__file__).resolve().parent / "data" / "avro" / "java"
SOURCE = HERE / "AvroJavaCheck.java"
POM = HERE / "pom.xml"
_COMPLETE = ".complete"


class AvroJavaError(Exception):
    """The reference implementation could not be fetched, compiled or run."""


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AvroJavaError(f"`{name}` is not on PATH: install {package}")
    return path


def _run(cmd: list[str], what: str, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    try:
        res = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AvroJavaError(f"{what} took over {timeout_s:.0f} s") from exc
    if res.returncode != 0:
        out = (res.stdout + res.stderr).decode(errors="replace").strip().splitlines()
        raise AvroJavaError(f"{what} failed (exit {res.returncode}): " + " | ".join(out[-15:]))
    return res


def fetch_jars(home: Path, version: str = AVRO_VERSION, timeout_s: float = 600) -> Path:
    """Avro ``version``'s runtime jars under ``home``, fetched with Maven unless kept."""
    libs = home / "avro-java" / version / "libs"
    if (libs / _COMPLETE).is_file():
        return libs
    with file_lock(libs.parent.parent / ".fetch.lock"):
        if (libs / _COMPLETE).is_file():
            return libs
        mvn = _tool("mvn", "Maven (apt-get install maven)")
        tmp = libs.parent / f"libs.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(
            [
                mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(POM),
                f"-Davro.version={version}", "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={tmp.resolve()}",
            ],
            f"Maven fetching org.apache.avro:avro:{version}",
            timeout_s,
        )  # fmt: skip
        if not (tmp / f"avro-{version}.jar").is_file():
            raise AvroJavaError(f"Maven succeeded but avro-{version}.jar is missing from {tmp}")
        shutil.rmtree(libs, ignore_errors=True)
        os.replace(tmp, libs)
        (libs / _COMPLETE).write_text(f"{version}\n")
    return libs


def compiled(home: Path, libs: Path) -> Path:
    """The directory holding ``AvroJavaCheck.class``, compiled once per source and jars."""
    digest = hashlib.sha256(SOURCE.read_bytes() + libs.parent.name.encode()).hexdigest()[:16]
    classes = home / "avro-java" / f"classes-{digest}"
    if (classes / "AvroJavaCheck.class").is_file():
        return classes
    javac = _tool("javac", "a Java 17 JDK (apt-get install openjdk-17-jdk-headless)")
    tmp = classes.parent / f"{classes.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _run([javac, "-cp", f"{libs}/*", "-d", str(tmp), str(SOURCE)], "javac AvroJavaCheck", 300)
    shutil.rmtree(classes, ignore_errors=True)
    os.replace(tmp, classes)
    return classes


def _checker(home: Path) -> list[str]:
    """The command that runs AvroJavaCheck: jars fetched and the class compiled if need be."""
    java = _tool("java", "Java 17 (apt-get install openjdk-17-jdk-headless)")
    libs = fetch_jars(home)
    classes = compiled(home, libs)
    return [java, "-cp", f"{classes}{os.pathsep}{libs}/*", "AvroJavaCheck"]


def decode_with_java(
    home: Path,
    work: Path,
    schemas: Iterable[Mapping[str, Any]],
    messages: Iterable[tuple[str, str, bytes]],
) -> dict[str, dict[str, Any]]:
    """Avro Java's reading of each ``(label, expected record name, message)``, by label."""
    schemas_file = work / "schemas.json"
    schemas_file.write_text(json.dumps(list(schemas)))
    lines = [f"{label}\t{name}\t{data.hex()}" for label, name, data in messages]
    messages_file = work / "messages.tsv"
    messages_file.write_text("\n".join(lines) + "\n")
    res = _run(
        [*_checker(home), str(schemas_file), str(messages_file)],
        "java AvroJavaCheck", 300,
    )  # fmt: skip
    # Split on "\n" only: str.splitlines() also breaks at U+0085 and U+2028, which a
    # bytes field read as ISO-8859-1 text may hold.
    text = res.stdout.decode("utf-8")
    out = [json.loads(line) for line in text.split("\n") if line.strip()]
    return {o["label"]: o for o in out}


def read_schema_files(home: Path, schemas_dir: Path) -> list[dict[str, Any]]:
    """Avro Java's own parse of every ``.avsc`` under ``schemas_dir`` (``--avsc`` mode):
    per file, the named type's full name, kind and fingerprint, or Avro's refusal."""
    res = _run(
        [*_checker(home), "--avsc", str(schemas_dir)],
        "java AvroJavaCheck --avsc", 300,
    )  # fmt: skip
    return [json.loads(line) for line in res.stdout.decode("utf-8").split("\n") if line.strip()]
