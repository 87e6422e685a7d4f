"""Which of an event's field paths hold a value, as a bit set: the walk and its generated twin.

Policy reads the fields present once per event (need to know works field by
field). :func:`fields_present` walks a value against the tree of the codec's field
paths; :func:`compile_present` generates straight-line code for the same tree
when the policy loads, the router's path. Both give the same answer for every
input (``tests/test_policy_decide.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from broker._codegen import Source

# The field paths as a tree: key -> (path, label if a leaf, subtree if not).
Tree = dict[str, tuple[str, str | None, "Tree | None"]]
# The same tree for the walk over an event, split at each node into its leaves
# (key -> the bit of the leaf's path) and its inner nodes (key -> node).
Node = tuple[dict[str, int], dict[str, "Node"]]


def build_tree(leaves: Mapping[str, str]) -> Tree:
    root: Tree = {}
    for path, label in leaves.items():
        node = root
        parts = path.split(".")
        for i, part in enumerate(parts):
            here = ".".join(parts[: i + 1])
            if i == len(parts) - 1:
                node[part] = (here, label, None)
                break
            entry = node.get(part)
            if entry is None or entry[2] is None:
                entry = (here, None, {})
                node[part] = entry
            child = entry[2]
            assert child is not None
            node = child
    return root


def bits_tree(tree: Tree, bit_of: Mapping[str, int]) -> Node:
    leaves: dict[str, int] = {}
    inner: dict[str, Node] = {}
    for key, (path, label, child) in tree.items():
        if label is not None:
            leaves[key] = bit_of[path]
        elif child is not None:
            inner[key] = bits_tree(child, bit_of)
    return leaves, inner


def fields_present(value: Any, node: Node) -> int:
    """The bit set of the leaf fields under ``node`` that hold a value (not None).

    A union value ``(record name, body)`` descends into the branch named by the
    record's short name (a path segment); arrays add no segment (CONTRACTS.md,
    "Field paths").
    """
    leaves, inner = node
    present = 0
    kind = type(value)
    # (exact dicts, tuples and lists, what the codec decodes to, skip the slower ABC check)
    if kind is dict or (kind is not tuple and kind is not list and isinstance(value, Mapping)):
        for key, v in value.items():
            if v is not None:
                bit = leaves.get(key)
                if bit is not None:
                    present |= bit
                else:
                    child = inner.get(key)
                    if child is not None:
                        present |= fields_present(v, child)
    elif isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[0], str) and value[1] is not None:
            child = inner.get(value[0].rsplit(".", 1)[-1])
            if child is not None:
                present |= fields_present(value[1], child)
    elif isinstance(value, list):
        for v in value:
            if v is not None:
                present |= fields_present(v, node)
    return present


def lowest_bit(node: Node) -> int:
    """The index of the lowest bit under ``node`` (0 if none): its subtree's paths
    share a prefix, so in sorted order they are adjacent and their bits a run."""
    leaves, inner = node
    found = [bit.bit_length() - 1 for bit in leaves.values()]
    found += [lowest_bit(child) for child in inner.values() if child[0] or child[1]]
    return min(found, default=0)


def compile_present(root: Node) -> Callable[[Any], int]:
    """:func:`fields_present` for ``root``, as generated straight-line Python (the router's path).

    The field paths are known when the policy loads, so instead of walking an
    event key by key and asking at each step whether the key is a leaf, an
    inner node or neither, the generated code asks an exact ``dict`` for each of
    its known keys in turn (as the codec's generated reader and writer do for a
    schema), records inside records written inline. A value of any other kind
    than an exact ``dict``, ``list`` or union ``(str, body)`` tuple (a Mapping
    subclass, a tuple subclass, a str subclass as a union name, a key missing)
    goes to :func:`fields_present` itself, so the answer is :func:`fields_present`'s for
    every input, never a guess; ``tests/test_policy_decide.py`` holds the two
    equal on generated values.

    Each node's code gathers its bits shifted down to its lowest one (a node's
    paths are a run of bits): small ints, one shift per node instead of an
    operation on a ~90-bit int per field (figures: docs/PERFORMANCE.md).
    """
    src = Source({"_present": fields_present})
    fresh = src.var
    names: dict[int, str] = {}

    def function_of(node: Node) -> str:
        """The name of ``node``'s function: ``fields_present(value, node) >> lowest bit``."""
        got = names.get(id(node))
        if got is None:
            got = names[id(node)] = fresh("_n")
            emit_function(node, got)
        return got

    def emit_dict(value: str, node: Node, acc: str, indent: int, out: list[str]) -> None:
        """Lines that set ``acc`` to the bits of the exact dict ``value`` at ``node``."""
        pad = "    " * indent
        lo = lowest_bit(node)
        leaves, inner = node
        out.append(f"{pad}{acc} = 0")
        out.append(f"{pad}try:")
        for key, bit in leaves.items():
            out.append(f"{pad}    if {value}[{key!r}] is not None:")
            out.append(f"{pad}        {acc} |= {bit >> lo!r}")
        for key, child in inner.items():
            shift = lowest_bit(child) - lo
            var, sub = fresh("v"), fresh("b")
            out.append(f"{pad}    {var} = {value}[{key!r}]")
            out.append(f"{pad}    if {var} is not None:")
            out.append(f"{pad}        if type({var}) is dict:")
            emit_dict(var, child, sub, indent + 3, out)
            out.append(f"{pad}        else:")
            out.append(f"{pad}            {sub} = {function_of(child)}({var})")
            out.append(f"{pad}        {acc} |= {sub} << {shift}")
        out.append(f"{pad}except KeyError:  # a key missing: the plain walk")
        out.append(f"{pad}    {acc} = _present({value}, {node_constant(node)}) >> {lo}")

    def node_constant(node: Node) -> str:
        """A name the generated code can pass to :func:`fields_present` for ``node``."""
        return src.const(node, "_node")

    def emit_function(node: Node, fn: str) -> None:
        lo = lowest_bit(node)
        body = [f"def {fn}(value):", "    kind = type(value)", "    if kind is dict:"]
        emit_dict("value", node, "bits", 2, body)
        body.append("        return bits")
        body.append("    if kind is list:")
        body.append("        bits = 0")
        body.append("        for v in value:")
        body.append("            if v is not None:")
        body.append(f"                bits |= {fn}(v)")
        body.append("        return bits")
        body.append("    if kind is tuple and len(value) == 2 and type(value[0]) is str:")
        body.append("        branch = value[1]")
        body.append("        if branch is None:")
        body.append("            return 0")
        # A union branch is named by the record's short name (a path segment).
        body.append(f"        child = {fn}_branches.get(value[0].rsplit('.', 1)[-1])")
        body.append("        if child is None:")
        body.append("            return 0")
        body.append("        return child[0](branch) << child[1]")
        body.append(f"    return _present(value, {node_constant(node)}) >> {lo}")
        src.lines.extend(body)
        src.lines.append("")
        branches[fn] = {
            key: (function_of(child), lowest_bit(child) - lo) for key, child in node[1].items()
        }

    branches: dict[str, dict[str, tuple[str, int]]] = {}
    top = function_of(root)  # every path is under the root: its lowest bit is bit 0
    namespace = src.namespace("<policy present>")
    for fn, table in branches.items():
        namespace[f"{fn}_branches"] = {k: (namespace[f], n) for k, (f, n) in table.items()}
    present: Callable[[Any], int] = namespace[top]
    return present
