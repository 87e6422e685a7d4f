"""``safeshare audit refusals``: every call the gateway refused because its
caller tried to act as someone else (the log's REFUSED leaves), with proof.

A refusal names no child (no event id, no subject), so ``who-saw`` never lists
one; an auditor asking "who tried to act as whom" asks here. Like every audit
command it verifies the whole log first and reads Kafka or an exported bundle.
"""

from __future__ import annotations

import hashlib
import json

import click

from broker.cli._audit_options import MAX_MS, LogSource, exit_codes, iso, log_options, parse_time

_NO_BODY = hashlib.sha256(b"").hexdigest()


@click.command()
@click.option("--from", "from_", help="From this time (ms since epoch or ISO 8601, inclusive).")
@click.option("--to", help="Up to this time (ms since epoch or ISO 8601, exclusive).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, each with its inclusion proof.")
@log_options
def refusals(from_: str | None, to: str | None, as_json: bool, log: LogSource) -> None:
    """Every refused attempt to act as another principal (gateway 403s), in log order.

    Each line: when, who (the authenticated caller; a person as the keyed
    pseudonym the log holds), as whom it tried to act, what it tried, the
    SHA-256 of the refused request's body (never the body), and the leaf
    index and checkpoint that prove it. The whole log is verified first.
    """
    from broker.audit.leaf import LeafKind  # noqa: PLC0415
    from broker.audit.verify import prove_leaves, verify_bundle  # noqa: PLC0415

    with exit_codes():
        b = log.load()
        report = verify_bundle(b, log.trusted(), witness_vkeys=log.witness_vkeys,
                               witness_quorum=log.quorum)
        lo, hi = parse_time(from_, 0), parse_time(to, MAX_MS)
        found = [(i, leaf) for i, leaf in enumerate(report.leaves)
                 if leaf.kind is LeafKind.REFUSED and lo <= leaf.time_ms < hi]
        proofs = prove_leaves(b, [i for i, _ in found])
        if not as_json:
            click.echo(f"{len(found)} refused call(s) in {report.origin} "
                       f"(log verified: {report.tree_size} leaves)")
        for (i, leaf), p in zip(found, proofs, strict=True):
            size = int(p.checkpoint.decode("utf-8").split("\n", 2)[1])
            body = "" if leaf.event_digest == _NO_BODY else leaf.event_digest
            if as_json:
                click.echo(json.dumps({
                    "time": iso(leaf.time_ms), "kind": leaf.kind.value, "by": leaf.refused_by,
                    "as": leaf.refused_as, "action": leaf.reason, "outcome": leaf.outcome,
                    "body_sha256": body or None, "proof": p.to_json_value(),
                }, ensure_ascii=False))
                continue
            click.echo(
                f"{iso(leaf.time_ms)} REFUSED {leaf.refused_by} as {leaf.refused_as}: "
                f"{leaf.reason or '-'} ({leaf.outcome})"
                + (f" body sha256 {body}" if body else "")
                + f" [proof: leaf {i} in checkpoint {size}]"
            )
