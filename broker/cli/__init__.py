"""The ``safeshare`` command. Each area contributes one click group in its own module."""
