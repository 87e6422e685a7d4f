"""Routing errors. A withheld share or a quarantined message is *not* an error."""

from broker.errors import SafeshareError


class RoutingError(SafeshareError):
    """The router cannot continue (e.g. it cannot write its audit: fail closed)."""
