"""``safeshare audit``: checkpoint, verify, prove, who-saw, refusals, export, witness, keys.

Everything an auditor runs works from Kafka by default (``--bootstrap`` or
``$SAFESHARE_BOOTSTRAP``, else the local broker) or offline from an exported
bundle (``--bundle FILE``). Verification trusts only log keys given on the
command line (``--vkey``, ``--vkeys FILE``) or, by default, the trust anchor
file the checkpointer wrote when it created the log's first key
(``$SAFESHARE_HOME/keys/audit-log.vkey``); never keys that came with the log.

Exit codes: 0 success; 1 verification failed (the message names the first
bad leaf index, checkpoint or key list); 2 usage or operational error (no
Kafka, unreadable file); 3 a witness detected a split view.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from broker.cli._audit_options import (
    EXIT_ERROR,
    EXIT_FAILED,
    MAX_MS,
    LogSource,
    bundle_option,
    counts,
    exit_codes,
    iso,
    load_bundle,
    log_options,
    parse_duration,
    parse_time,
    shard_option,
    stop_on_signals,
    subject_key,
    trust_options,
    trusted_keys,
)
from broker.cli.audit_refusals import refusals
from broker.cli.common import bootstrap_option, resolve_bootstrap, settings

# -- the group ------------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """The signed audit log: checkpoint it, verify it, prove and query decisions, witness it."""


@audit.command()
@click.option("--follow", is_flag=True, help="Keep running: a checkpoint at most every --interval.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds.")
@click.option(
    "--idle",
    type=float,
    default=0.0,
    help="With --follow: stop after this many seconds without new leaves (0: never).",
)
@shard_option
@bootstrap_option
def checkpoint(
    follow: bool, interval: float, idle: float, shard: int, bootstrap: str | None
) -> None:
    """Replay the audit partition and publish a signed checkpoint of it.

    Without --follow: catch up to the end, publish one checkpoint if the tree
    grew, print the latest checkpoint note. The signing key is created on
    first use in $SAFESHARE_HOME/keys (audit-log.skey, its public key in
    audit-log.vkey: give that to auditors and witnesses).
    """
    from broker.audit.checkpointer import Checkpointer  # noqa: PLC0415
    from broker.kafka.exceptions import ProducerFencedError  # noqa: PLC0415

    with exit_codes():
        cp = Checkpointer.from_settings(
            settings(), resolve_bootstrap(bootstrap), shard=shard, interval_s=interval
        )
        try:
            if follow:
                published = cp.run(idle_exit_s=idle or None, stop_event=stop_on_signals())
            else:
                published = cp.run_once()
        except ProducerFencedError as exc:
            click.echo(
                f"fenced: another checkpointer of shard {shard}, or a key rotation, took over "
                f"({exc}); restart this one to continue",
                err=True,
            )
            sys.exit(EXIT_ERROR)
        finally:
            cp.close()
        if published is not None:
            click.echo(published.note.decode("utf-8"), nl=False)
            click.echo(
                f"{cp.origin}: checkpoint at size {published.checkpoint.size}, root "
                f"{published.checkpoint.root_hash.hex()}",
                err=True,
            )


@audit.command()
@log_options
def verify(log: LogSource) -> None:
    """Replay the log, recompute the tree and check every signature and proof.

    Exit 0 if everything verifies (one summary line), 1 naming the first bad
    leaf index, checkpoint or key list and what is wrong with it.
    """
    from broker.audit.verify import verify_bundle  # noqa: PLC0415

    with exit_codes():
        trusted = log.trusted()
        b = log.load()
        report = verify_bundle(b, trusted, witness_vkeys=log.witness_vkeys,
                               witness_quorum=log.quorum)
        cosigs = sum(len(c.cosignatures) for c in b.checkpoints)
        click.echo(
            f"OK {report.origin}: {report.tree_size} leaves ({counts(report.leaves)}) verified "
            f"against {report.checkpoints} signed checkpoints and {cosigs} cosignatures; "
            f"root {report.root_hash.hex()}; key list v{report.key_list_version}; "
            f"witnesses {', '.join(report.witnesses) or '-'}"
        )


@audit.command()
@click.option("--event", "event_id", required=True, help="The event id (UUID).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the proof document here (default: standard output).",
)
@bundle_option
@shard_option
@bootstrap_option
def prove(
    event_id: str, out: Path | None, bundle: Path | None, shard: int, bootstrap: str | None
) -> None:
    """Inclusion proofs (RFC 9162) for every decision about one event, as JSON.

    Each proof holds the leaf, its index, the audit path and the signed
    (cosigned) checkpoint it leads to; the document also carries the log's
    signed key lists. Check it offline with `safeshare audit verify-proof`.
    """
    from broker.audit.verify import proof_document  # noqa: PLC0415

    with exit_codes():
        b = load_bundle(bundle, bootstrap, shard)
        doc = proof_document(b, event_id)
        if doc is None:
            click.echo(f"no decision about event {event_id} is in the checkpointed log", err=True)
            sys.exit(EXIT_FAILED)
        proofs = doc["proofs"]
        assert isinstance(proofs, list)
        text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
        if out is None:
            click.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
            click.echo(f"wrote {len(proofs)} proof(s) for event {event_id} to {out}", err=True)


@audit.command("verify-proof")
@click.argument("proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@trust_options
@shard_option
def verify_proof(
    proof_file: Path,
    vkeys: tuple[str, ...],
    vkeys_file: Path | None,
    quorum: int,
    witness_vkeys: tuple[str, ...],
    shard: int,
) -> None:
    """Check a proof document from `safeshare audit prove`, offline, with only public keys."""
    from broker.audit.exceptions import VerificationError  # noqa: PLC0415
    from broker.audit.keys import KeyRing  # noqa: PLC0415
    from broker.audit.verify import (  # noqa: PLC0415
        PROOF_FORMAT,
        EventProof,
        verify_event_proof,
    )

    with exit_codes():
        ring = KeyRing(trusted_keys(vkeys, vkeys_file, shard))
        try:
            doc = json.loads(proof_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VerificationError(f"{proof_file} is not a proof document: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != PROOF_FORMAT:
            raise VerificationError(f"{proof_file} is not a {PROOF_FORMAT} document")
        for i, kl in enumerate(doc.get("key_lists") or []):
            try:
                ring.add_key_list(str(kl).encode("utf-8"))
            except VerificationError as exc:
                raise VerificationError(
                    f"key list {i} in the proof does not verify: {exc}"
                ) from exc
        proofs = doc.get("proofs")
        if not isinstance(proofs, list) or not proofs:
            raise VerificationError("the document holds no proofs: it proves nothing")
        for raw in proofs:
            if not isinstance(raw, dict):
                raise VerificationError("malformed event proof: not an object")
            p = EventProof.from_json_value(raw)
            leaf = verify_event_proof(p, ring, witness_vkeys=witness_vkeys, witness_quorum=quorum)
            if doc.get("event_id") is not None and leaf.event_id != doc["event_id"]:
                raise VerificationError(
                    f"leaf {p.index} is about event {leaf.event_id!r}, not {doc['event_id']!r}"
                )
            size = p.checkpoint.decode("utf-8").split("\n", 2)[1]
            click.echo(
                f"OK leaf {p.index} in checkpoint of size {size}: {leaf.kind.value} "
                f"{leaf.recipient or '-'} at {iso(leaf.time_ms)} rule {leaf.rule_id or '-'}"
            )


@audit.command("who-saw")
@click.option(
    "--subject",
    required=True,
    help="The subject's pseudonym as it appears in the events (subject.pseudonym).",
)
@click.option("--from", "from_", help="From this time (ms since epoch or ISO 8601, inclusive).")
@click.option("--to", help="Up to this time (ms since epoch or ISO 8601, exclusive).")
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The router's subject pseudonym key (default $SAFESHARE_HOME/keys/subject-pseudonym.key).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, each with its inclusion proof.")
@log_options
def who_saw(
    subject: str,
    from_: str | None,
    to: str | None,
    key_file: Path | None,
    as_json: bool,
    log: LogSource,
) -> None:
    """Every share of, and every decision not to share, information about a child,
    with the consent records applied for the child, every read of a shared copy
    (CONSULTED: who, purpose, via; DPA 2018 s.62) and, under each share on
    consent, the consent history it relied on.

    The log holds no identifier in clear: the subject is the keyed HMAC of the
    pseudonym in the events (broker.audit.leaf.subject_pseudonym with the
    router's key), computed here. The whole log is verified first. Each line
    gives the time, decision, recipient, lawful basis, rule and the leaf
    index and checkpoint that prove it (`safeshare audit prove --event`).
    """
    from broker.audit import verify as _verify  # noqa: PLC0415
    from broker.audit.leaf import subject_pseudonym  # noqa: PLC0415

    with exit_codes():
        pseudonym = subject_pseudonym(subject_key(key_file), subject)
        trusted = log.trusted()
        b = log.load()
        sightings = _verify.who_saw(
            b,
            pseudonym,
            parse_time(from_, 0),
            parse_time(to, MAX_MS),
            trusted_vkeys=trusted,
            witness_vkeys=log.witness_vkeys,
            witness_quorum=log.quorum,
            kinds=_verify.SUBJECT_HISTORY,
        )
        proofs = _verify.prove_leaves(b, [s.index for s in sightings])
        if not as_json:
            click.echo(
                f"{len(sightings)} decision(s) about subject {pseudonym[:16]}… in {b.origin} "
                f"(log verified: {len(b.leaves)} leaves)"
            )
        for s, p in zip(sightings, proofs, strict=True):
            leaf = s.leaf
            size = int(p.checkpoint.decode("utf-8").split("\n", 2)[1])
            if as_json:
                doc: dict[str, Any] = {
                    "time": iso(leaf.time_ms),
                    "kind": leaf.kind.value,
                    "recipient": leaf.recipient,
                    "lawful_basis": leaf.lawful_basis,
                    "rule_id": leaf.rule_id,
                    "reason": leaf.reason,
                    "data_classes_shared": list(leaf.data_classes_shared),
                    "event_id": leaf.event_id,
                    "source_agency": leaf.source_agency,
                    "proof": p.to_json_value(),
                }
                if leaf.kind.value == "CONSENT":
                    doc.update(_consent_json(leaf), consent_ref=leaf.consent_ref)
                if leaf.kind.value == "CONSULTED":
                    doc.update(by=leaf.consulted_by, purpose=leaf.consulted_purpose,
                               via=leaf.consulted_via, record=leaf.consulted_record)
                if s.relied_on:
                    doc["consent_relied_on"] = [
                        {**_consent_json(c.leaf), "record": c.leaf.event_id, "leaf": c.index}
                        for c in s.relied_on
                    ]
                click.echo(json.dumps(doc, ensure_ascii=False))
                continue
            if leaf.kind.value == "CONSENT":
                click.echo(
                    f"{iso(leaf.time_ms)} CONSENT  {leaf.outcome} for {leaf.consent_purpose}"
                    f" recorded by {leaf.source_agency} (entitlement {leaf.rule_id or '-'})"
                    f" record {leaf.event_id}"
                    + (f" replacing {leaf.consent_ref}" if leaf.consent_ref else "")
                    + f" [proof: leaf {s.index} in checkpoint {size}]"
                )
                continue
            if leaf.kind.value == "CONSULTED":
                click.echo(
                    f"{iso(leaf.time_ms)} CONSULTED {leaf.recipient}'s copy read by"
                    f" {leaf.consulted_by} for {leaf.consulted_purpose} via"
                    f" {leaf.consulted_via} event {leaf.event_id} at {leaf.consulted_record}"
                    f" [proof: leaf {s.index} in checkpoint {size}]"
                )
                continue
            why = (
                f"basis {leaf.lawful_basis!r} classes {','.join(leaf.data_classes_shared) or '-'}"
                if leaf.kind.value == "SHARED"
                else f"reason {leaf.reason or '-'}"
            )
            click.echo(
                f"{iso(leaf.time_ms)} {leaf.kind.value:<8} {leaf.recipient or '-'} {why} "
                f"rule {leaf.rule_id or '-'} event {leaf.event_id} from {leaf.source_agency} "
                f"[proof: leaf {s.index} in checkpoint {size}]"
            )
            for c in s.relied_on:
                click.echo(
                    f"    relied on consent: {c.leaf.outcome} for {c.leaf.consent_purpose}"
                    f" recorded by {c.leaf.source_agency} at {iso(c.leaf.time_ms)}, record"
                    f" {c.leaf.event_id} [leaf {c.index}]"
                )


def _consent_json(leaf: Any) -> dict[str, Any]:
    """A CONSENT leaf's own members, for ``who-saw --json``."""
    return {
        "status": leaf.outcome,
        "purpose": leaf.consent_purpose,
        "roles": list(leaf.consent_roles or ()),
        "data_classes": list(leaf.consent_data_classes or ()),
        "expires_ms": leaf.consent_expires_ms,
        "recorded_by": leaf.source_agency,
        "entitlement": leaf.rule_id,
    }


@audit.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@shard_option
@bootstrap_option
def export(out: Path, shard: int, bootstrap: str | None) -> None:
    """Write the offline bundle: leaves up to the last checkpoint, checkpoints with their
    cosignatures, signed key lists. Verify it with `safeshare audit verify --bundle`."""
    from broker.audit.stream import read_log  # noqa: PLC0415

    with exit_codes():
        b = read_log(resolve_bootstrap(bootstrap), settings().topics, shard=shard)
        b.write(out)
        cosigs = sum(len(c.cosignatures) for c in b.checkpoints)
        click.echo(
            f"wrote {out}: {b.origin}, {len(b.leaves)} leaves, {len(b.checkpoints)} checkpoints, "
            f"{cosigs} cosignatures, {len(b.key_lists)} key list(s)"
        )


@audit.command()
@click.option(
    "--name", required=True, help="The witness's name, e.g. witness.example/police-devon."
)
@click.option(
    "--state",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The witness's state file (last cosigned checkpoint per log). Keep it safe.",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The witness's private key (created on first use; default: STATE with .skey).",
)
@click.option(
    "--log-vkey",
    "log_vkeys",
    multiple=True,
    help="The log's trust anchor (its first vkey). Default: $SAFESHARE_HOME/keys/audit-log.vkey.",
)
@click.option("--follow", is_flag=True, help="Keep cosigning new checkpoints.")
@click.option("--idle", type=float, default=0.0, help="With --follow: stop after this idle time.")
@shard_option
@bootstrap_option
def witness(
    name: str,
    state: Path,
    key_file: Path | None,
    log_vkeys: tuple[str, ...],
    follow: bool,
    idle: float,
    shard: int,
    bootstrap: str | None,
) -> None:
    """Cosign the log's checkpoints after checking them against the leaves in Kafka.

    The witness replays the audit partition itself and computes every root and
    consistency proof from it (it trusts no proof from the operator). A
    checkpoint inconsistent with the leaves or with what it cosigned before is
    a split view: exit 3 with both roots.
    """
    from broker.audit.cosignature import CosignatureSigner, Witness  # noqa: PLC0415
    from broker.audit.keys import read_private_key, write_private_key  # noqa: PLC0415
    from broker.audit.witness_service import KafkaWitness  # noqa: PLC0415
    from broker.clock import SystemClock  # noqa: PLC0415

    with exit_codes():
        clock = SystemClock()
        path = key_file or state.with_suffix(".skey")
        if path.exists():
            signer = CosignatureSigner.from_skey(read_private_key(path), clock=clock)
            if signer.name != name:
                raise click.UsageError(f"{path} holds the key of {signer.name!r}, not {name!r}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            signer = CosignatureSigner.generate(name, clock=clock)
            write_private_key(path, signer.skey)
            click.echo(f"created witness key {path}; its vkey: {signer.vkey}", err=True)
        w = Witness(signer=signer, state_path=state)
        anchors = trusted_keys(log_vkeys, None, shard)
        stop = stop_on_signals()
        with KafkaWitness(
            bootstrap=resolve_bootstrap(bootstrap),
            topics=settings().topics,
            witness=w,
            log_anchors=anchors,
            shard=shard,
        ) as kw:
            report = kw.run(follow=follow, idle_exit_s=idle or None, stop_event=stop)
        click.echo(f"{name} for {kw.origin}: {report.summary()}")


@audit.command()
@click.option("--rotate", is_flag=True, help="Replace the log's signing key (needs Kafka).")
@click.option(
    "--overlap",
    default="24h",
    show_default=True,
    help="With --rotate: how long the old key stays valid (e.g. 3600000, 90s, 30m, 24h, 7d).",
)
@shard_option
@bootstrap_option
def keys(rotate: bool, overlap: str, shard: int, bootstrap: str | None) -> None:
    """Show the log's verifier keys, or rotate the signing key with an overlap.

    A rotation commits a KEY_ROTATION leaf and the new signed key list (signed
    by the old and the new key) in one transaction, then publishes a
    checkpoint. A running checkpointer of the shard is fenced by it: restart it.
    """
    from broker.audit.checkpoint import origin_for_shard  # noqa: PLC0415
    from broker.audit.checkpointer import Checkpointer  # noqa: PLC0415
    from broker.audit.keystore import LogKeyStore  # noqa: PLC0415

    with exit_codes():
        s = settings()
        origin = origin_for_shard(shard)
        store = LogKeyStore(s.keys_dir, origin=origin, shard=shard)
        if rotate:
            overlap_ms = parse_duration(overlap)
            with Checkpointer.from_settings(s, resolve_bootstrap(bootstrap), shard=shard) as cp:
                kl = cp.rotate_key(overlap_ms=overlap_ms)
            click.echo(f"rotated {origin}: key list v{kl.version}")
            for e in kl.keys:
                until = "-" if e.not_after_ms is None else iso(e.not_after_ms)
                click.echo(f"  {e.vkey}  valid {iso(e.not_before_ms)} .. {until}")
            return
        anchor = store.anchor()
        click.echo(f"log {origin} (keys in {store.directory})")
        click.echo(f"  trust anchor (first key): {anchor or '- (not created yet)'}")
        if store.current_path.exists():
            click.echo(f"  current signing key:      {store.current(create=False).vkey}")
        for old in store.retired():
            click.echo(f"  retired:                  {old.vkey}")


audit.add_command(refusals)


if __name__ == "__main__":  # pragma: no cover
    audit()
