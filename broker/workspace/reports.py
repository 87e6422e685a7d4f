"""Reports for DPOs and auditors, from the verified audit log and the
consultations topic: a child's subject-access report (HTML, PDF), the DPA 2018
s.62 log of consultations and disclosures (CSV) and the checkpoint history.

Every report starts by verifying the whole log (signatures, roots, consistency,
witness cosignatures): an answer from an unverified log is worthless, so a
failed verification is the report's result and no line is given. Each line of
the subject-access report carries its RFC 9162 inclusion proof, which
``safeshare audit verify-proof`` checks offline.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from broker.audit import verify as _verify
from broker.audit.bundle import Bundle
from broker.audit.exceptions import AuditError
from broker.audit.leaf import AuditLeaf, LeafKind
from broker.gateway.consultations import reader_pseudonym
from broker.workspace.render import HERE

BREAK_GLASS = "REVIEW_WITHIN_72H"
_ENV = Environment(loader=FileSystemLoader(HERE / "templates"),
                   autoescape=select_autoescape(["html"]))


def iso(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Trust:
    """What the log is verified against: log keys and witnesses (with a quorum)."""

    vkeys: Sequence[str]
    witness_vkeys: Sequence[str] = ()
    quorum: int = 0


@dataclass
class SarLine:
    time: str
    kind: str
    recipient: str
    source: str
    lawful_basis: str
    rule: str
    reason: str
    classes: str
    withheld: list[str]
    break_glass: bool
    reviews: list[str]
    event_id: str
    index: int
    checkpoint_size: int
    proof: dict[str, object]


@dataclass
class SubjectAccess:
    pseudonym: str
    origin: str
    generated: str
    verification: str
    verified: bool
    lines: list[SarLine] = field(default_factory=list)
    key_lists: list[str] = field(default_factory=list)

    def proofs_json(self) -> str:
        """Every line's proof in one document ``safeshare audit verify-proof`` checks."""
        return json.dumps({"format": _verify.PROOF_FORMAT, "origin": self.origin,
                           "key_lists": self.key_lists,
                           "proofs": [x.proof for x in self.lines]}, indent=1) + "\n"


def subject_access(bundle: Bundle, pseudonym: str, subject_hmac: str, trust: Trust,
                   reviews: Mapping[tuple[str, str], list[str]] | None = None) -> SubjectAccess:
    """Who received what about the child, when, on which basis, what was withheld
    and why, break-glass shares and their reviews; each line with its proof."""
    now = iso(int(datetime.now(UTC).timestamp() * 1000))
    try:
        sightings = _verify.who_saw(bundle, subject_hmac, 0, 2**62, trusted_vkeys=trust.vkeys,
                                    witness_vkeys=trust.witness_vkeys,
                                    witness_quorum=trust.quorum)
        proofs = _verify.prove_leaves(bundle, [s.index for s in sightings])
    except AuditError as exc:
        return SubjectAccess(pseudonym, bundle.origin, now, f"NOT VERIFIED: {exc}", False)
    out = SubjectAccess(pseudonym, bundle.origin, now,
                        f"verified: {len(bundle.leaves)} leaves, {len(bundle.checkpoints)} "
                        "signed checkpoints", True,
                        key_lists=[k.decode("utf-8") for k in bundle.key_lists])
    for s, p in zip(sightings, proofs, strict=True):
        leaf = s.leaf
        # Obligations are "CODE@due_ms" (broker/audit/leaf_writer.py).
        glass = any(o.split("@", 1)[0] == BREAK_GLASS for o in leaf.obligations or ())
        out.lines.append(SarLine(
            time=iso(leaf.time_ms), kind=leaf.kind.value, recipient=leaf.recipient or "-",
            source=leaf.source_agency, lawful_basis=leaf.lawful_basis or "-",
            rule=leaf.rule_id or "-", reason=leaf.reason or "",
            classes=", ".join(leaf.data_classes_shared) or "-",
            withheld=list(leaf.fields_redacted or ()), break_glass=glass,
            reviews=list((reviews or {}).get((leaf.event_id, leaf.recipient), [])),
            event_id=leaf.event_id, index=s.index,
            checkpoint_size=int(p.checkpoint.decode("utf-8").split("\n", 2)[1]),
            proof=p.to_json_value()))
    return out


def subject_access_html(report: SubjectAccess) -> str:
    return _ENV.get_template("report_sar.html").render(r=report)


def to_pdf(html: str) -> bytes:
    """The HTML as PDF (WeasyPrint); ImportError names what to install."""
    try:
        from weasyprint import HTML  # noqa: PLC0415 - optional, and slow to import
    except ImportError as exc:
        raise ImportError("PDF needs WeasyPrint: pip install 'safeshare[reports]' (and "
                          "Debian's libpango-1.0-0 libpangoft2-1.0-0)") from exc
    return HTML(string=html).write_pdf()  # type: ignore[no-any-return]


S62_COLUMNS = ("time", "record", "by", "party", "purpose_or_basis", "via", "event_id",
               "where", "rule")


def reader_names(key: bytes, usernames: Iterable[str]) -> dict[str, str]:
    """Each workspace user's pseudonym in the audit log -> ``user:NAME``.

    The log names a person only by a keyed HMAC (no name in clear); s.62(2)
    asks that the log make it possible to establish who consulted, so the DPO,
    who holds the key and the users file, gets names back in the report."""
    return {reader_pseudonym(key, f"user:{u}"): f"user:{u}" for u in usernames}


def s62_csv(consultations: Iterable[Mapping[str, Any]], leaves: Iterable[AuditLeaf],
            law_enforcement: set[str], names: Mapping[str, str] | None = None) -> str:
    """DPA 2018 s.62 logging as CSV: each consultation (who read which records,
    when, for what purpose: the log's CONSULTED leaves), each refusal (the
    log's REFUSED leaves; older ones from ``consultations``, the gateway's
    topic) and each disclosure of
    law-enforcement data (a share of an event from ``law_enforcement``
    agencies: to whom, when, on which basis). Ids and coordinates only, no
    content; rows in time order. ``names`` (:func:`reader_names`) turns the
    log's pseudonyms of people back into user names; one it does not know
    stays as the log has it."""
    named = names or {}

    def who(by: object) -> str:
        return named.get(str(by), str(by))

    rows: list[tuple[str, ...]] = []
    leaves = list(leaves)
    # Refusals are REFUSED leaves of the signed log; the consultations topic's
    # copy of one is not listed twice (older refusals are only on the topic).
    signed = {(leaf.time_ms, str(leaf.refused_as), leaf.reason)
              for leaf in leaves if leaf.kind is LeafKind.REFUSED}
    for c in consultations:
        kind = str(c.get("kind", ""))
        at = iso(int(c.get("at_ms") or 0))
        if kind == "consultation":
            for r in c.get("records") or []:
                rows.append((at, "consultation", who(c.get("by")), str(c.get("subscriber")),
                             str(c.get("purpose")), str(c.get("via")), str(r["event_id"]),
                             f"{r['topic']}/{r['partition']}/{r['offset']}", ""))
        elif kind == "refusal" and (int(c.get("at_ms") or 0), str(c.get("claimed")),
                                    str(c.get("action"))) not in signed:
            rows.append((at, "refusal", who(c.get("by")), str(c.get("claimed")),
                         str(c.get("action")), "gateway", "", "", ""))
    for leaf in leaves:
        if leaf.kind is LeafKind.CONSULTED:
            rows.append((iso(leaf.time_ms), "consultation", who(leaf.consulted_by),
                         leaf.recipient, str(leaf.consulted_purpose), str(leaf.consulted_via),
                         leaf.event_id, str(leaf.consulted_record), ""))
        elif leaf.kind is LeafKind.REFUSED:
            rows.append((iso(leaf.time_ms), "refusal", who(leaf.refused_by), str(leaf.refused_as),
                         leaf.reason, "gateway", "", "", ""))
        elif leaf.kind is LeafKind.SHARED and leaf.source_agency in law_enforcement:
            rows.append((iso(leaf.time_ms), "disclosure", leaf.source_agency, leaf.recipient,
                         leaf.lawful_basis, "router", leaf.event_id, "", leaf.rule_id))
    rows.sort(key=lambda r: r[0])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(S62_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


@dataclass
class CheckpointRow:
    size: int
    root: str
    signers: list[str]
    cosigners: list[str]


@dataclass
class CheckpointHistory:
    origin: str
    verification: str
    verified: bool
    rows: list[CheckpointRow]


def _signers(lines: Iterable[str]) -> list[str]:
    return [ln.split(" ")[1] for ln in lines if ln.startswith("\u2014 ") and " " in ln[2:]]


def checkpoint_history(bundle: Bundle, trust: Trust) -> CheckpointHistory:
    """Every checkpoint (size, root, who signed, which witnesses cosigned) and the
    result of verifying the whole log against ``trust``."""
    try:
        report = _verify.verify_bundle(bundle, trust.vkeys, witness_vkeys=trust.witness_vkeys,
                                       witness_quorum=trust.quorum)
        result, ok = "verified: " + report.summary(), True
    except AuditError as exc:
        result, ok = f"NOT VERIFIED: {exc}", False
    rows = []
    for cp in bundle.checkpoints:
        text = cp.note.decode("utf-8", "replace")
        body, _, sigs = text.partition("\n\n")
        head = body.split("\n")
        rows.append(CheckpointRow(
            size=int(head[1]) if len(head) > 1 and head[1].isdigit() else -1,
            root=head[2] if len(head) > 2 else "", signers=_signers(sigs.split("\n")),
            cosigners=_signers(cp.cosignatures)))
    return CheckpointHistory(bundle.origin, result, ok, rows)


def checkpoint_html(history: CheckpointHistory) -> str:
    return _ENV.get_template("report_checkpoints.html").render(h=history)


def _read_topic(bootstrap: str, topic: str, handle: Any, timeout_s: float = 30.0) -> None:
    from broker.kafka.consumer import catch_up, make_consumer  # noqa: PLC0415
    from broker.kafka.structs import TopicPartition  # noqa: PLC0415

    consumer = make_consumer(bootstrap, group_id=None, topics=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        catch_up(consumer, tps, handle, timeout_s=timeout_s)
    finally:
        consumer.close()


def read_consultations(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of the consultations topic (JSON objects), as written."""
    out: list[dict[str, Any]] = []
    _read_topic(bootstrap, topic, lambda r: out.append(json.loads(r.value)) if r.value else None)
    return out


def read_reviews(bootstrap: str, topics: Any, codec: Any,
                 recipients: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """REVIEWED acknowledgements of each recipient: ``{(event id, recipient): [text]}``."""
    from broker.loop.core import ACKNOWLEDGEMENT  # noqa: PLC0415

    out: dict[tuple[str, str], list[str]] = {}

    def add(r: Any) -> None:
        if not r.value:
            return
        ack = codec.decode(r.value, ACKNOWLEDGEMENT)
        if ack["kind"] == "REVIEWED":
            at = ack["acknowledged_at"]
            ms = int(at.timestamp() * 1000) if isinstance(at, datetime) else int(at)
            out.setdefault((ack["event_id"], ack["subscriber"]), []).append(
                f"reviewed by {ack['actor']} at {iso(ms)}"
                + (f" ({ack['outcome']})" if ack.get("outcome") else ""))

    for sub in sorted(set(recipients)):
        _read_topic(bootstrap, topics.acks(sub), add)
    return out


ReviewsOf = Callable[[set[str]], Mapping[tuple[str, str], list[str]]]


def subject_access_report(bundle: Bundle, pseudonym: str, key: bytes, trust: Trust,
                          reviews_of: ReviewsOf | None = None) -> SubjectAccess:
    """:func:`subject_access` with the reviews of its break-glass shares, read by
    ``reviews_of(recipients)`` only when there are some (the CLI and the DPO pages)."""
    from broker.audit.leaf import subject_pseudonym  # noqa: PLC0415

    hmac_ = subject_pseudonym(key, pseudonym)
    first = subject_access(bundle, pseudonym, hmac_, trust)
    glass = {x.recipient for x in first.lines if x.break_glass}
    if not glass or reviews_of is None:
        return first
    return subject_access(bundle, pseudonym, hmac_, trust, reviews_of(glass))


def verified_s62(bundle: Bundle, trust: Trust, consultations: Iterable[Mapping[str, Any]],
                 law_enforcement: set[str], names: Mapping[str, str] | None = None) -> str:
    """:func:`s62_csv` from a log that verifies against ``trust``; raises AuditError if not."""
    verified = _verify.verify_bundle(bundle, trust.vkeys, witness_vkeys=trust.witness_vkeys,
                                     witness_quorum=trust.quorum)
    return s62_csv(consultations, verified.leaves, law_enforcement, names)


def law_enforcement(policy: Any) -> set[str]:
    """The agencies whose shares are disclosures of law-enforcement data (police)."""
    return {a.id for a in (policy.agencies if policy is not None else []) if a.type == "POLICE"}
