"""Hostile-input corpus and the router fuzzer (``python -m fuzz``)."""
