"""Safeshare's own schema rules, checked on the model of every schema the codec loads.

Every field has a ``doc`` and a ``dataClass`` from the vocabulary in
docs/CONTRACTS.md, every non-metadata field is nullable with default null (so a
redacted copy still validates), and no type can make a hostile message hang the
decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.codec._schema import (
    DATA_CLASSES,
    FORMATS,
    JSON_TYPE_KEY,
    METADATA,
    NAMESPACE,
    Array,
    Enum,
    Field,
    Fixed,
    Map,
    Named,
    Node,
    Primitive,
    Record,
    Union,
    _zero_width,
    branch_segment,
    join,
)


@dataclass(frozen=True)
class LintProblem:
    """A broken rule, named by the record and field that own it."""

    owner: str  # full name of the record holding the field (or of the named type)
    field: str  # field name, "" for a problem with the type itself
    path: str  # where it was met, from the root being checked
    reason: str


def lint(root: Node) -> list[LintProblem]:
    """Safeshare's schema rules; an empty list when ``root`` keeps them all.

    - every field has a non-empty ``doc`` and a ``dataClass`` from the vocabulary;
    - a field whose class is not ``metadata`` is ``["null", ...]`` with default null,
      so a redacted copy still validates against the same schema;
    - every field under a non-metadata field carries the same class, so redacting
      the outer field and redacting each field within mean the same thing;
    - named types live in the ``safeshare`` namespace;
    - a record used in a union of several records has no field called ``type``
      (the branch key of human-friendly JSON);
    - no recursive type, and no array or map whose items can encode to zero bytes:
      either would let a few hostile bytes make the decoder loop or recurse
      without consuming input;
    - a union with several non-null branches holds only named types, so each
      branch has a short name for field paths.
    """
    problems: list[LintProblem] = []
    seen_named: set[int] = set()

    def field_rules(record: Record, f: Field, path: str, inherited: str | None) -> str | None:
        def add(reason: str) -> None:
            problems.append(LintProblem(record.fullname, f.name, path, reason))

        if not f.doc or not f.doc.strip():
            add("field has no doc")
        label = f.data_class
        if label is None:
            add("field has no dataClass")
        elif label not in DATA_CLASSES:
            add(f"dataClass {label!r} is not in the vocabulary ({', '.join(sorted(DATA_CLASSES))})")
        elif inherited is not None and label != inherited:
            add(
                f"dataClass {label} inside a field of class {inherited} (at {path}); fields "
                "within a non-metadata field must share its class"
            )
        if label is not None and label != METADATA:
            t = f.type
            if not (
                isinstance(t, Union)
                and t.branches
                and isinstance(t.branches[0], Primitive)
                and t.branches[0].kind == "null"
            ):
                add(f'{label} field must be nullable: ["null", ...]')
            elif f.default is not None:
                add(f"{label} field must have default null")
        if f.format is not None and f.format not in FORMATS:
            add(f"unknown format {f.format!r}")
        if inherited is not None:
            return inherited
        return label if label not in (None, METADATA) else None

    def walk(
        node: Node,
        path: str,
        inherited: str | None,
        stack: tuple[Named, ...],
        owner: tuple[str, str],
    ) -> None:
        if isinstance(node, Record | Enum | Fixed) and id(node) not in seen_named:
            seen_named.add(id(node))
            if not node.fullname.startswith(NAMESPACE + "."):
                problems.append(
                    LintProblem(node.fullname, "", path, f"not in namespace {NAMESPACE}")
                )
        if isinstance(node, Record):
            if node in stack:
                problems.append(LintProblem(*owner, path, f"{node.fullname} is recursive"))
                return
            names: set[str] = set()
            for f in node.fields:
                fpath = join(path, f.name)
                if f.name in names:
                    problems.append(
                        LintProblem(node.fullname, f.name, fpath, "field defined twice")
                    )
                names.add(f.name)
                label = field_rules(node, f, fpath, inherited)
                walk(f.type, fpath, label, (*stack, node), (node.fullname, f.name))
        elif isinstance(node, Array | Map):
            inner = node.items if isinstance(node, Array) else node.values
            if _zero_width(inner, set()):
                problems.append(
                    LintProblem(
                        *owner,
                        path,
                        "items can encode to zero bytes; a "
                        "hostile count would make the decoder loop",
                    )
                )
            walk(inner, path, inherited, stack, owner)
        elif isinstance(node, Union):
            non_null = node.non_null
            if len(node.branches) - len(non_null) > 1:
                problems.append(LintProblem(*owner, path, "union holds null twice"))
            if len(non_null) > 1:
                for b in non_null:
                    if not isinstance(b, Record | Enum | Fixed):
                        problems.append(
                            LintProblem(
                                *owner, path, "a union of several types may hold only named types"
                            )
                        )
                        break
                    if isinstance(b, Record) and any(f.name == JSON_TYPE_KEY for f in b.fields):
                        problems.append(
                            LintProblem(
                                b.fullname,
                                JSON_TYPE_KEY,
                                path,
                                f"a record in a union may not have a field named {JSON_TYPE_KEY}",
                            )
                        )
            for b in node.branches:
                walk(b, join(path, branch_segment(node, b)), inherited, stack, owner)

    walk(root, "", None, (), ("", ""))
    return problems
