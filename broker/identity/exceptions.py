"""Identity errors: a partnership key that cannot be had (fail closed)."""

from broker.errors import SafeshareError


class IdentityError(SafeshareError):
    """Partnership keys are missing, unreadable or malformed; no pseudonym can be derived."""
