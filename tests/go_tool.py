"""Build the tests' Go cross-checkers with the machine's Go, nothing from the home directory.

The HPKE check (tests/data/feeds/hpke_crosscheck, standard library only) and the
audit check (tests/data/audit/crosscheck, modules from the Go module proxy, pinned
by its go.sum) are built here into a test's tmp directory, their build and module
caches kept under the state directory (``var/go`` in a checkout), so only the first
run compiles or downloads. A missing Go or a failed build is one :class:`GoToolError`
line, never a skip. No tests live here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class GoToolError(Exception):
    """Go is missing, or a cross-checker did not build."""


def go_executable() -> str:
    """The ``go`` on PATH, else Go's own install place (a non-login shell may lack it)."""
    exe = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if exe is None:
        raise GoToolError("go is not on PATH: the cross-checks need Go 1.26+")
    return exe


def go_env(home: Path) -> dict[str, str]:
    state = home / "go"
    return dict(
        os.environ,
        GOTOOLCHAIN="local",  # never download another toolchain
        GOFLAGS="-mod=mod",
        GOENV="off",  # nothing from the user's go env file
        GOCACHE=str(state / "cache"),
        GOPATH=str(state / "path"),
        CGO_ENABLED="0",
    )


def build(home: Path, source: Path, binary: Path, *, timeout_s: float = 600) -> Path:
    """``go build`` the program in ``source`` to ``binary``."""
    try:
        built = subprocess.run(
            [go_executable(), "build", "-o", str(binary), "."],
            cwd=source, env=go_env(home), capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise GoToolError(f"go build of {source} took over {timeout_s:.0f} s") from exc
    if built.returncode != 0:
        why = " | ".join(built.stderr.strip().splitlines()[-10:])
        raise GoToolError(f"go build of {source} failed: {why}")
    return binary
