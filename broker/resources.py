"""The data files the package reads at run time, found wherever it runs from.

The Avro schemas, the local Kafka's Maven pom and log4j2 configuration, the
example policy and the demo scenario live at the top of the checkout
(``schemas/``, ``deploy/``), where people edit them. A built wheel carries them
as package data (``broker/schemas``, ``broker/deploy``; see ``setup.py``), read
here through :mod:`importlib.resources`, so an installed package needs no
checkout. Running from a checkout (editable install or none) they are read in
place.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from broker.errors import ConfigError


def _checkout() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "schemas").is_dir() else None


#: The checkout this package runs from, or None when it is installed (a wheel).
CHECKOUT = _checkout()


def path(*parts: str) -> Path:
    """The file or directory ``parts`` (e.g. ``"deploy", "kafka", "pom.xml"``).

    Package data first, then the checkout. Java and Maven are handed these
    paths, so they must be real files: a zipped install is refused.
    """
    packaged = files("broker").joinpath(*parts)
    if isinstance(packaged, Path) and packaged.exists():
        return packaged
    if CHECKOUT is not None and CHECKOUT.joinpath(*parts).exists():
        return CHECKOUT.joinpath(*parts)
    raise ConfigError(
        f"{'/'.join(parts)}: not in the installed package ({packaged}); "
        "the safeshare installation is incomplete (reinstall it)"
    )
