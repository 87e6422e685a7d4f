"""The error tree drawn in broker/errors.py is the real one: every class, each under its parent."""

from __future__ import annotations

import importlib
import pkgutil
import re

import broker
from broker import errors
from broker.errors import SafeshareError

_LINE = re.compile(r"^    ((?:[│ ]   |[├└]── )*)(\w+)")


def _all_subclasses() -> dict[str, type]:
    for module in pkgutil.walk_packages(broker.__path__, "broker."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)  # every error class gets defined
    found: dict[str, type] = {}
    todo: list[type] = [SafeshareError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _drawn() -> list[tuple[int, str]]:
    """(depth, class name) of each line of the drawing, in order."""
    block = (errors.__doc__ or "").split("::\n\n", 1)[1].split("\n\n", 1)[0]
    out = []
    for line in block.splitlines():
        m = _LINE.match(line)
        assert m, f"not a line of the tree: {line!r}"
        out.append((len(m.group(1)) // 4, m.group(2)))
    return out


def test_the_drawing_lists_every_error_class_once_under_its_parent() -> None:
    real = _all_subclasses()
    drawn = _drawn()
    names = [name for _, name in drawn]
    assert sorted(names) == sorted(real), (
        f"missing from the drawing: {sorted(set(real) - set(names))}; "
        f"drawn but not real: {sorted(set(names) - set(real))}"
    )
    parents: list[str] = []
    for depth, name in drawn:
        parents[depth:] = [name]
        if depth:
            assert parents[depth - 1] in {b.__name__ for b in real[name].__bases__}, (
                f"{name} is drawn under {parents[depth - 1]}"
            )
