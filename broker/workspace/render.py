"""The workspace's state (users, sessions, per-subscriber feeds, clocks,
acknowledgers, templates) and how a feed record becomes what a page shows.

:meth:`Workspace.view` is the one place a record is turned into display rows:
each leaf field of the event, except those the decision lists in
``fields_redacted``, which become "withheld" rows naming the data class and the
rule under which the rest was shared; a withheld value is never read.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from broker.codec import Codec
from broker.identity.desk import IdentityDesk
from broker.kafka.producer import make_producer
from broker.kafka.writers import Writers
from broker.loop.api import Acknowledger
from broker.policy import Policy
from broker.signing.feedkeys import FeedKeyring
from broker.topics import DEFAULT, Topics
from broker.workspace.links import LinkFollower
from broker.workspace.notify import OwnerNotifier
from broker.workspace.sessions import Sessions, User, hash_password
from broker.workspace.store import RAG_ORDER, ClockFollower, Entry, FeedStore, to_ms

HERE = Path(__file__).parent


@dataclass(frozen=True)
class DpoConfig:
    """Where the DPO's pages read from: the keys directory (the checkpointer's
    trust anchor, the router's subject pseudonym key), the log shard, witnesses."""

    keys_dir: Path
    shard: int = 0
    witness_vkeys: tuple[str, ...] = ()
    quorum: int = 0


@dataclass
class WorkspaceConfig:
    users: dict[str, User]
    bootstrap: str
    topics: Topics = DEFAULT
    policy: Policy | None = None
    keyrings: dict[str, FeedKeyring] = field(default_factory=dict)
    """Confidential feeds: the subscriber's private feed keys, by subscriber id."""
    secret: bytes | None = None
    dpo: DpoConfig | None = None
    """The DPO's report sources; without them the DPO pages say what is missing."""


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _left(ms: int) -> str:
    mins = abs(ms) // 60_000
    text = f"{mins // 60}h {mins % 60:02d}m" if mins >= 60 else f"{mins}m"
    return f"{text} left" if ms >= 0 else f"overdue by {text}"


def _leaves(value: Any, path: str, out: list[tuple[str, Any]]) -> None:
    if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], dict)):  # a union's branch, as the codec names it
        _leaves(value[1], f"{path}.{value[0].rsplit('.', 1)[-1]}", out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _leaves(v, f"{path}.{k}" if path else k, out)
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        for i, v in enumerate(value):
            _leaves(v, f"{path}[{i}]", out)
    else:
        out.append((path, value))


def _under(path: str, redacted: list[str]) -> str | None:
    bare = path.split("[", 1)[0] if "[" in path else path
    for r in redacted:
        if bare == r or bare.startswith(r + ".") or path.startswith(r + "["):
            return r
    return None


def _show(value: Any) -> str:
    if value is None:
        return "(not given)"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, bytes):
        return f"({len(value)} bytes)"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value) or "(none)"
    return str(value)


class Workspace:
    """Everything the pages share; one per application."""

    def __init__(self, config: WorkspaceConfig, codec: Codec) -> None:
        self.config = config
        self.codec = codec
        self.users = config.users
        self.sessions = Sessions(config.secret)
        self.dummy_hash = hash_password(secrets.token_hex(8))
        self._stores: dict[str, FeedStore] = {}
        # Made again when kafka-python puts one's producer in a fatal state (a record
        # refused for good fails every later one too: every later triage or
        # consultation notice, until a restart).
        self._acks: Writers[str, Acknowledger] = Writers(
            "workspace acknowledger", lambda subscriber: Acknowledger(
                bootstrap=config.bootstrap, subscriber=subscriber, topics=config.topics,
                codec=codec))
        self._desks: dict[str, IdentityDesk] = {}
        self._notifier: Writers[str, OwnerNotifier] = Writers(
            "owner notifier", lambda _: OwnerNotifier(
                make_producer(config.bootstrap), config.topics, codec, config.policy))
        self._lock = threading.Lock()
        self._clocks: ClockFollower | None = None
        self._links: LinkFollower | None = None
        self._classes = codec.data_classes()
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(["html"]), auto_reload=False)
        self.env.filters["when"] = _when
        # Teams whose people link children: their pages show the identity reviews.
        self.env.globals["deciders"] = tuple(
            getattr(config.policy, "identity_deciders", ()) or ())

    def start(self) -> None:
        """Follow the clocks and every feed a user belongs to (so pages are warm)."""
        self._clocks = ClockFollower(self.config.bootstrap, self.config.topics, self.codec)
        deciders: tuple[str, ...] = tuple(
            getattr(self.config.policy, "identity_deciders", ()) or ())
        if deciders:
            self._links = LinkFollower(self.config.bootstrap, self.config.topics, self.codec,
                                       deciders)
        for sub in sorted({u.subscriber for u in self.users.values()
                           if u.role == "practitioner"}):
            self.store(sub)

    def store(self, subscriber: str) -> FeedStore:
        with self._lock:
            s = self._stores.get(subscriber)
            if s is None:
                s = self._stores[subscriber] = FeedStore(
                    self.config.bootstrap, subscriber, self.config.topics, self.codec,
                    self.config.keyrings.get(subscriber))
            return s

    def child(self, pseudonym: str) -> frozenset[str]:
        """Every pseudonym of the child ``pseudonym`` names, as the router applied
        the deciding teams' links (just ``pseudonym`` when nobody decides links)."""
        links = self._links
        return links.group(pseudonym) if links is not None else frozenset({pseudonym})

    def acknowledger(self, subscriber: str) -> Acknowledger:
        """The team's acknowledger; a new one if the last one's producer broke."""
        return self._acks.get(subscriber)

    def identity_desk(self, subscriber: str) -> IdentityDesk:
        """The team's identity desk: its review items in, its people's decisions out."""
        with self._lock:
            d = self._desks.get(subscriber)
            if d is None:
                d = self._desks[subscriber] = IdentityDesk(
                    bootstrap=self.config.bootstrap, subscriber=subscriber,
                    topics=self.config.topics, codec=self.codec)
            return d

    def notifier(self) -> OwnerNotifier:
        """Who tells owning agencies of consultations (one producer, made when first
        needed, and made again if its producer broke)."""
        return self._notifier.get("workspace")

    def purposes(self, subscriber: str) -> list[str]:
        policy = self.config.policy
        sub = policy.subscriber(subscriber) if policy is not None else None
        return sorted(sub.purposes) if sub is not None and sub.purposes else ["SAFEGUARDING"]

    def new_pre(self) -> str:
        return secrets.token_urlsafe(24)

    def render(self, name: str, **ctx: Any) -> str:
        return self.env.get_template(name).render(**ctx)

    def clocked(self, subscriber: str) -> set[str]:
        """The event ids ``subscriber`` has a clock for."""
        return self._clocks.events_of(subscriber) if self._clocks is not None else set()

    def clock(self, entry: Entry, subscriber: str, now_ms: int) -> dict[str, Any] | None:
        if self._clocks is None:
            return None
        states = self._clocks.for_event(entry.event_id, subscriber)
        if not states:
            return None
        c = min(states, key=lambda s: (s.status.value != "OPEN", s.due_ms))
        return {"kind": c.kind, "due": _when(c.due_ms), "status": c.status.value,
                "due_ms": c.due_ms if c.status.value == "OPEN" else None,
                "left": _left(c.due_ms - now_ms) if c.status.value == "OPEN" else
                c.status.value.lower(), "overdue": c.status.value == "OPEN" and
                c.due_ms <= now_ms}

    def view(self, entry: Entry, user: User, fields: bool = True) -> dict[str, Any]:
        """What a page may show of ``entry``: shown fields (unless ``fields`` is
        false, as in a chronology) and withheld ones (never their values)."""
        event, decision = entry.event, entry.decision
        redacted = sorted(decision.get("fields_redacted") or [])
        leaves: list[tuple[str, Any]] = []
        if fields:
            _leaves(event, "", leaves)
        shown = [(p, _show(v)) for p, v in leaves
                 if _under(p, redacted) is None and p != "signature"]
        rule = decision.get("rule_id") or "-"
        withheld = [{"path": r, "data_class": self._classes.get(r, "a class not shared"),
                     "why": f"its data class ({self._classes.get(r, 'unlisted')}) is not "
                            f"among those rule {rule} shares with {user.subscriber}"}
                    for r in redacted]
        return {
            "event_id": entry.event_id, "pseudonym": entry.pseudonym, "rag": entry.rag,
            "category": event.get("category"), "risk": event.get("risk_level"),
            "summary": event.get("summary") if _under("summary", redacted) is None else None,
            "source": (event.get("source") or {}).get("agency_id"),
            "occurred": _when(entry.occurred_ms), "reported": _when(entry.reported_ms),
            "rule": rule, "lawful_basis": decision.get("lawful_basis") or "-",
            "classes": ", ".join(decision.get("data_classes_shared") or []) or "-",
            "shown": shown, "withheld": withheld, "triage": list(entry.triage),
            "clock": self.clock(entry, user.subscriber, int(time.time() * 1000)),
            "where": f"{entry.topic}/{entry.partition}/{entry.offset}",
            "review_due": next((_when(to_ms(o.get("due_at"))) for o in decision.get("obligations")
                                or [] if o.get("code") == "REVIEW_WITHIN_72H"), None),
        }

    def alert(self, entry: Entry, user: User, received: Callable[[str], bool]) -> dict[str, Any]:
        """A pattern alert as :meth:`view` shows it, plus its evidence: each event id
        it rests on (as far as the copy shows them) and whether this team received it."""
        v = self.view(entry, user)
        ids = [i for path, value in v["shown"] if path.endswith(".evidence")
               for i in value.split(", ") if i and i != "(none)"]
        return {**v, "evidence": [(i, received(i)) for i in ids]}

    def close(self) -> None:
        if self._clocks is not None:
            self._clocks.close()
        if self._links is not None:
            self._links.close()
        for s in list(self._stores.values()):
            s.close()
        self._acks.close()
        for d in list(self._desks.values()):
            d.close()
        self._notifier.close()


def latest_versions(entries: list[Entry]) -> list[Entry]:
    """``entries`` with each pattern alert only at its newest version (an alert is
    raised once and updated; the queue shows it once)."""
    newest: dict[str, tuple[int, int]] = {}
    for e in entries:
        if (a := e.alert) is not None:
            newest[a[0]] = max(newest.get(a[0], (-1, -1)), (a[1], e.seq))
    return [e for e in entries
            if (a := e.alert) is None or newest[a[0]] == (a[1], e.seq)]


def queue_rows(ws: Workspace, entries: list[Entry], user: User) -> list[dict[str, Any]]:
    """The queue: most urgent first (Red, Amber, Green), newest first within each;
    a pattern alert once, at its newest version (the row names the version)."""
    now = int(time.time() * 1000)
    rows = []
    entries = latest_versions(entries)
    for e in sorted(entries, key=lambda e: (RAG_ORDER.get(e.rag, 1), -e.reported_ms, -e.seq)):
        summary = e.event.get("summary")
        if "summary" in (e.decision.get("fields_redacted") or []):
            summary = None
        rows.append({"event_id": e.event_id, "rag": e.rag, "pseudonym": e.pseudonym,
                     "category": e.event.get("category"), "summary": summary,
                     "source": (e.event.get("source") or {}).get("agency_id"),
                     "reported": _when(e.reported_ms), "clock": ws.clock(e, user.subscriber,
                                                                          now),
                     "triaged": bool(e.triage),
                     "alert": e.alert[0] if e.alert else None,
                     "version": e.alert[1] if e.alert else None})
    return rows
