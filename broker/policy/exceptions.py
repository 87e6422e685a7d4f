"""Errors of the policy package.

Only a policy *file* that cannot be trusted is an error. A decision to withhold
is a normal value (:class:`broker.policy.Decision`), never an exception::

    SafeshareError
    └── PolicyError          the policy file is invalid; the router must not start
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.errors import SafeshareError


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a policy file, at its place (1-based line and column)."""

    line: int
    column: int
    message: str

    def format(self, source: str) -> str:
        """``source:line:column: message``, the form editors and CI logs understand."""
        return f"{source}:{self.line}:{self.column}: {self.message}"


class PolicyError(SafeshareError):
    """A policy file is missing, unreadable or invalid.

    Raised by :meth:`broker.policy.Policy.load` so that a router with a broken
    policy refuses to start (fail closed) instead of sharing under a policy
    nobody checked. ``problems`` lists every problem found, in file order.
    """

    def __init__(self, source: str, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.source = source
        self.problems: tuple[Problem, ...] = tuple(sorted(problems))
        lines = [p.format(source) for p in self.problems]
        noun = "problem" if len(lines) == 1 else "problems"
        super().__init__(f"{source}: {len(lines)} {noun} in policy\n" + "\n".join(lines))
