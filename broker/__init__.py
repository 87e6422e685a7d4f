"""Safeshare: a cross-agency information-sharing broker for child safeguarding.

Packages read like the design spine:

- ``broker.codec``   Avro schemas, single-object encoding, fingerprints, compatibility.
- ``broker.kafka``   thin wrappers around kafka-python; the only code that imports it.
- ``broker.policy``  consent and need-to-know decisions (values, never exceptions).
- ``broker.routing`` the router: ingest -> decisions -> feeds, quarantine, audit.
- ``broker.audit``   RFC 6962 Merkle log, C2SP signed checkpoints, auditor tools.
- ``broker.cli``     the ``safeshare`` command.

``broker.api`` is the small public surface agency systems and subscribers import.
"""

__version__ = "0.1.0"
