"""Sealed feed copies open with Go's crypto/hpke, and what Go seals opens with ours.

The format's promise (README, "Confidential feeds") is that any HPKE (RFC 9180)
implementation opens a subscriber's copy with its keyring. Checked here against
an implementation that shares no code with ``cryptography``: Go's standard
library, through tests/data/feeds/hpke_crosscheck/ (built with the ``go`` on
PATH, Go 1.26+, standard library only; its build cache is kept under the state
directory, ``var/go`` in a checkout, so only the first run compiles). No Kafka:
the copies come from the routing core, as the router writes them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker import config
from broker.codec.limits import MAX_EVENT_BYTES
from broker.policy import Policy
from broker.routing.core import Inbound
from broker.signing.feedkeys import FeedKeyring
from broker.signing.feeds import (
    AEAD_AES_256_GCM,
    ENCRYPTED_FEED_RECORD,
    FEED_RECORD,
    KDF_HKDF_SHA256,
    KEM_IDS,
    KEMS,
    hpke_info,
    seal_message,
)
from broker.topics import Topics
from tests.feed_helpers import MASH, POLICY, confidential_policy, core_at
from tests.go_tool import GoToolError, build
from tests.helpers import CODEC, ROOT, example

CROSSCHECK = ROOT / "tests" / "data" / "feeds" / "hpke_crosscheck"
NOW_MS = 1_795_000_000_000

Go = Callable[[dict[str, Any]], dict[str, Any]]


# --------------------------------------------------------------------------------------
# The Go side


@pytest.fixture(scope="module")
def go(settings: config.Settings, tmp_path_factory: pytest.TempPathFactory) -> Go:
    """Runs the Go cross-checker on one JSON request (byte strings as bytes) and
    returns its JSON answer (byte strings decoded). Fails, never skips, without Go."""
    binary = tmp_path_factory.mktemp("go") / "hpke_crosscheck"
    try:
        build(settings.home, CROSSCHECK, binary)
    except GoToolError as exc:
        pytest.fail(
            f"{exc} (tests/test_feed_hpke_interop.py needs Go 1.26+ for crypto/hpke)",
            pytrace=False,
        )

    def run(request: dict[str, Any]) -> dict[str, Any]:
        out = subprocess.run(
            [str(binary)],
            input=json.dumps(_b64(request)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"hpke_crosscheck failed: {out.stderr.strip()}"
        answer: dict[str, Any] = _unb64(json.loads(out.stdout))
        return answer

    return run


def _b64(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _b64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_b64(v) for v in value]
    return value


def _unb64(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: v if k == "error" else base64.b64decode(v) if isinstance(v, str) else _unb64(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    return value


def open_case(outer: dict[str, Any], private_key: bytes, subscriber: str) -> dict[str, Any]:
    """What another implementation takes from a sealed record and the keyring file."""
    return {
        "kem_id": outer["kem_id"],
        "kdf_id": outer["kdf_id"],
        "aead_id": outer["aead_id"],
        "private_key": private_key,
        "enc": outer["enc"],
        "ciphertext": outer["ciphertext"],
        "info": hpke_info(subscriber, outer["event_id"]),
        "aad": b"",  # the format's AEAD associated data is empty
    }


# --------------------------------------------------------------------------------------
# Our side: keys from the project's keyring, copies from the routing core


def confidential_mash(kem: str, tmp_path: Path) -> tuple[FeedKeyring, bytes, Policy]:
    """A MASH keyring with one new key, that key's private bytes read back from the
    saved keyring file (as another program would), and a policy listing its public key."""
    ring = FeedKeyring(MASH)
    ring.new_key(kem)
    ring.save(tmp_path / "keyring.json")
    stored = json.loads((tmp_path / "keyring.json").read_text())["keys"][0]
    policy = confidential_policy(ring)
    return ring, base64.b64decode(stored["private_key"]), policy


def route(policy: Policy, source: dict[str, Any]) -> bytes:
    """The MASH's copy of one event, as the routing core writes it."""
    t = Topics("interop")
    core = core_at(policy, t, NOW_MS, pseudonym_key=b"i" * 32)
    routed = core.handle(
        Inbound(
            t.ingest(source["source"]["agency_id"]),
            0,
            0,
            None,
            CODEC.encode(CODEC.from_json(source)),
        )
    )
    assert routed.quarantined is None
    copies = [o.value for o in routed.outputs if o.topic == t.feed(MASH)]
    assert len(copies) == 1 and copies[0] is not None
    return copies[0]


# --------------------------------------------------------------------------------------
# Ours to Go


@pytest.mark.parametrize("kem", KEMS)
def test_go_opens_the_copies_the_router_seals(go: Go, kem: str, tmp_path: Path) -> None:
    ring, private_key, policy = confidential_mash(kem, tmp_path)
    sources = [example("missing_episode"), example("exploitation_screening")]
    sealed = [route(policy, s) for s in sources]
    outers = [CODEC.decode(m, ENCRYPTED_FEED_RECORD) for m in sealed]
    assert [o["kem_id"] for o in outers] == [KEM_IDS[kem]] * 2

    answer = go({"open": [open_case(o, private_key, MASH) for o in outers]})

    opener = ring.opener()
    for source, outer, got in zip(sources, outers, answer["opened"], strict=True):
        assert "error" not in got, got["error"]
        # Go derives the same public key from the stored private key (X-Wing: the seed's
        # expansion) and recovers exactly the bytes our reader recovers ...
        assert got["public_key"] == ring.keys[0].public().public_key
        assert got["plaintext"] == opener.open(outer)
        # ... which are the MASH's FeedRecord of that event.
        record = CODEC.decode(got["plaintext"], FEED_RECORD)
        assert record["event"]["event_id"] == source["event_id"]
        assert record["decision"]["subscriber"] == MASH


@pytest.mark.parametrize("kem", KEMS)
def test_go_opens_seal_message_byte_for_byte(go: Go, kem: str, tmp_path: Path) -> None:
    """Edge cases of the plaintext (empty, one byte, an event at the size limit) and of
    ``info`` (non-ASCII ids, UTF-8 lengths in bytes)."""
    ring, private_key, _ = confidential_mash(kem, tmp_path)
    key = ring.keys[0].public()
    cases = [
        (MASH, str(uuid.uuid4()), b""),
        (MASH, str(uuid.uuid4()), os.urandom(1)),
        ("équipe-mash-ŵ", "événement-1", os.urandom(MAX_EVENT_BYTES)),
    ]
    outers = [
        CODEC.decode(seal_message(CODEC, key, sub, eid, pt), ENCRYPTED_FEED_RECORD)
        for sub, eid, pt in cases
    ]
    answer = go({"open": [open_case(o, private_key, o["subscriber"]) for o in outers]})
    assert [got.get("plaintext", got.get("error")) for got in answer["opened"]] == [
        pt for _, _, pt in cases
    ]


@pytest.mark.parametrize("kem", KEMS)
def test_go_refuses_a_copy_moved_to_another_subscriber(
    go: Go, kem: str, tmp_path: Path
) -> None:
    """The binding holds outside our code too: the same copy and key, with ``info``
    naming another subscriber (or another event), does not open; as it is, it does."""
    _, private_key, policy = confidential_mash(kem, tmp_path)
    outer = CODEC.decode(route(policy, example("missing_episode")), ENCRYPTED_FEED_RECORD)
    right = open_case(outer, private_key, MASH)
    elsewhere = dict(right, info=hpke_info("devon-mash", outer["event_id"]))
    relabelled = dict(right, info=hpke_info(MASH, str(uuid.uuid4())))

    answer = go({"open": [right, elsewhere, relabelled]})

    opened, *refused = answer["opened"]
    assert "plaintext" in opened
    for got in refused:
        assert "plaintext" not in got and "error" in got


# --------------------------------------------------------------------------------------
# Go to ours


@pytest.mark.parametrize("kem", KEMS)
def test_our_keyring_opens_what_go_seals(go: Go, kem: str, tmp_path: Path) -> None:
    """Go seals a real FeedRecord to the public key as the policy lists it; the feed
    reader's path (the keyring's opener, on the Avro message) opens it."""
    ring, _, policy = confidential_mash(kem, tmp_path)
    listed = policy.subscriber(MASH)
    assert listed is not None
    key = listed.feed_keys[0]
    plain_policy = Policy.from_text(POLICY.read_text(), field_classes=CODEC.data_classes())
    source = example("missing_episode")
    plaintext = route(plain_policy, source)  # the MASH's copy, unsealed
    event_id = source["event_id"]

    answer = go(
        {
            "seal": [
                {
                    "kem_id": KEM_IDS[kem],
                    "kdf_id": KDF_HKDF_SHA256,
                    "aead_id": AEAD_AES_256_GCM,
                    "public_key": base64.b64decode(key.public_key),
                    "info": hpke_info(MASH, event_id),
                    "plaintext": plaintext,
                }
            ]
        }
    )

    (got,) = answer["sealed"]
    assert "error" not in got, got["error"]
    message = CODEC.encode(
        {
            "subscriber": MASH,
            "event_id": event_id,
            "key_id": ring.keys[0].id,
            "kem_id": KEM_IDS[kem],
            "kdf_id": KDF_HKDF_SHA256,
            "aead_id": AEAD_AES_256_GCM,
            "enc": got["enc"],
            "ciphertext": got["ciphertext"],
        },
        ENCRYPTED_FEED_RECORD,
    )
    outer, record, schema = ring.opener().open_typed(CODEC, message)
    assert schema == FEED_RECORD
    assert CODEC.encode(record, FEED_RECORD) == plaintext
    assert record["event"]["event_id"] == event_id
    assert record["decision"]["subscriber"] == MASH
