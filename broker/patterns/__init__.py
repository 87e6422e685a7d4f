"""Patterns no single agency sees: repeat missing, shared places, shared people.

:mod:`normalise` turns places, people and things into comparable keys;
:mod:`observe` reads them from a routed event; :mod:`detectors` keeps them in
their windows and raises or updates an alert when a threshold is met.
See docs/DESIGN.md "Patterns".
"""
