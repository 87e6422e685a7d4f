"""The one code-generation scaffold: the codec's generated reader and writer
(:mod:`broker.codec._read`, :mod:`broker.codec._write`) and the policy's
fields-present walk (:mod:`broker.policy._present`).

Each emits the Python source of functions known when a schema or policy loads
(straight-line code, no per-value dispatch) and compiles it once; this is the
part they share: fresh local names, constants the code refers to by name,
indented lines, and compiling the result.
"""

from __future__ import annotations

from typing import Any


class Source:
    """The source of one generated function, and the constants it uses."""

    def __init__(self, consts: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = dict(consts)
        self._n = 0

    def var(self, prefix: str = "v") -> str:
        """A fresh local name."""
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any, prefix: str = "C") -> str:
        """A name the generated code can use for ``value``."""
        name = self.var(prefix)
        self.consts[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def namespace(self, label: str) -> dict[str, Any]:
        """Compile the lines; return the namespace they ran in (constants and definitions).

        ``label`` names the code in tracebacks and profiles (``<avro writer X>``).
        Python's own limits (e.g. nesting) raise SyntaxError, RecursionError or
        MemoryError here, for the caller to turn into its own refusal.
        """
        namespace = dict(self.consts)
        code = compile("\n".join(self.lines), label, "exec")
        exec(code, namespace)  # noqa: S102 - our own generated source, from a schema or policy
        return namespace

    def function(self, name: str, label: str) -> Any:
        """Compile the lines and return the function they define as ``name``."""
        return self.namespace(label)[name]
