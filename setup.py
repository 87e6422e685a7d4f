"""Packaging beyond what pyproject.toml can say: the data files a wheel carries.

The schemas (``schemas/``) and the harness files (``deploy/``) stay where people
edit them, at the top of the checkout; a built wheel carries them inside the
package as ``broker/schemas`` and ``broker/deploy`` (each directory mapped as a
data-only package), where :mod:`broker.resources` finds them with
importlib.resources.
"""

from pathlib import Path

from setuptools import find_packages, setup

DATA = {"broker.schemas": "schemas", "broker.deploy": "deploy"}


def data_packages() -> dict[str, str]:
    """Every directory under DATA as a package name -> its directory."""
    out = {}
    for name, top in DATA.items():
        for directory in [Path(top), *sorted(p for p in Path(top).rglob("*") if p.is_dir())]:
            out[".".join((name, *directory.relative_to(top).parts))] = directory.as_posix()
    return out


data = data_packages()
setup(
    packages=find_packages(include=["broker", "broker.*"]) + list(data),
    package_dir=data,
    package_data={**{name: ["*"] for name in data}, "broker.identity": ["*.json"],
                  "broker.workspace": ["templates/*.html", "static/*"]},
)
