"""YAML loading that remembers where every value came from.

PyYAML's composer keeps a start mark on every node; the ordinary loaders throw
the marks away. We build plain Python values from the node tree ourselves and
keep a side table ``path -> (line, column)`` so that every problem the checker
finds can be reported at its place in the file (1-based, as editors count).

Only the JSON subset of YAML is accepted (mappings with string keys, lists,
strings, integers, booleans, null): the policy digest is computed over the JSON
canonical form, so a value that has no JSON form (a date, a float NaN, a binary)
has no place in a policy. Duplicate keys, which PyYAML silently collapses, are
reported, because the later one would silently win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from broker.policy.exceptions import Problem

PathElem = str | int
Path = tuple[PathElem, ...]
Place = tuple[int, int]


@dataclass
class Document:
    """Plain data plus the place of every value and every mapping key in it."""

    data: Any
    value_places: dict[Path, Place] = field(default_factory=dict)
    key_places: dict[Path, Place] = field(default_factory=dict)

    def place(self, path: Path, *, key: bool = False) -> Place:
        """Where ``path`` is (its key if ``key``), else where its nearest ancestor is."""
        p = path
        while True:
            if key and p in self.key_places:
                return self.key_places[p]
            if p in self.value_places:
                return self.value_places[p]
            if not p:
                return (1, 1)
            p = p[:-1]


def _place(node: yaml.Node) -> Place:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def load_document(text: str) -> tuple[Document | None, list[Problem]]:
    """Parse ``text``; return the document (None if unparseable) and the problems found."""
    problems: list[Problem] = []
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        return None, [Problem(line, col, f"YAML syntax error: {what}")]
    except yaml.YAMLError as exc:
        return None, [Problem(1, 1, f"YAML error: {exc}")]
    finally:
        loader.dispose()
    if root is None:
        return None, [Problem(1, 1, "the policy file is empty")]

    doc = Document(data=None)

    def build(node: yaml.Node, path: Path) -> Any:
        doc.value_places[path] = _place(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != (
                    "tag:yaml.org,2002:str"
                ):
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        msg = "YAML merge keys ('<<') are not supported in a policy"
                    else:
                        msg = "mapping keys must be plain strings"
                    problems.append(Problem(*_place(key_node), msg))
                    continue
                key = str(key_node.value)
                if key in out:
                    first = doc.key_places[(*path, key)]
                    problems.append(
                        Problem(
                            *_place(key_node),
                            f"duplicate key {key!r} (first at line {first[0]}:{first[1]});"
                            " the later one would silently win",
                        )
                    )
                    continue
                doc.key_places[(*path, key)] = _place(key_node)
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        try:
            value = loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problems.append(Problem(*_place(node), f"bad value: {exc}"))
            return None
        if value is not None and not isinstance(value, (str, bool, int)):
            problems.append(
                Problem(
                    *_place(node),
                    f"value {node.value!r} is a {type(value).__name__}; only strings, "
                    "integers, booleans and null are allowed (quote it to make it a string)",
                )
            )
            return None
        return value

    doc.data = build(root, ())
    return doc, problems
