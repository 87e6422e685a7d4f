"""The consistent identifier: NHS numbers (and UPNs) are checked wherever an event enters."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from broker.codec.exceptions import CodecError, EncodingError
from broker.identity.nhs import (
    canonical_nhs_number,
    is_nhs_number,
    nhs_check_digit,
    nhs_problem,
    upn_problem,
    with_canonical_identifiers,
)
from broker.intake import Intake
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.topics import Topics
from tests.helpers import CODEC, create_topics, example, read_all, run_router, settings_for

ROOT = Path(__file__).resolve().parent.parent
VALID = "9434765919"  # the NHS Data Dictionary's example shape, check digit 9


def _with_check_value_ten() -> str:
    """Nine digits whose modulus-11 check value is 10, plus any last digit."""
    for n in range(100_000_000, 100_001_000):
        nine = str(n)
        if nhs_check_digit(nine) is None:
            return nine + "0"
    raise AssertionError("no check value 10 in range")


def test_nhs_numbers_are_checked_by_their_modulus_11_digit() -> None:
    assert is_nhs_number(VALID)
    assert not is_nhs_number("9434765918")  # last digit wrong
    assert not is_nhs_number("943476591")  # nine digits
    assert not is_nhs_number("94347659190")
    assert not is_nhs_number("94347659l9")
    assert not is_nhs_number("９４３４７６５９１９")  # full-width digits are not ASCII digits
    ten = _with_check_value_ten()
    assert "check value is 10" in (nhs_problem(ten) or "")
    for last in "0123456789":
        assert not is_nhs_number(ten[:9] + last)


def test_typed_separators_are_tolerated_and_removed() -> None:
    assert canonical_nhs_number("943 476 5919") == VALID
    assert canonical_nhs_number("943-476-5919") == VALID
    event = {"subject": {"nhs_number": "943 476 5919", "upn": "a123 4567 89012"}}
    out = with_canonical_identifiers(event)
    assert out["subject"] == {"nhs_number": VALID, "upn": "A123456789012"}
    assert event["subject"]["nhs_number"] == "943 476 5919"  # the caller's dict is unchanged
    same = {"subject": {"nhs_number": VALID}}
    assert with_canonical_identifiers(same) is same


def test_upns_are_checked_by_their_check_letter() -> None:
    assert upn_problem("A123456789012") is None
    assert upn_problem("B801200005001") is None
    assert upn_problem("B80120000500A") is not None  # check letter no longer matches
    assert "check letter" in (upn_problem("C123456789012") or "")
    assert upn_problem("A12345678901") is not None


@pytest.mark.parametrize("bad", ["9434765918", "12345", _with_check_value_ten()])
def test_the_codec_refuses_an_invalid_nhs_number_naming_the_field_not_the_value(bad: str) -> None:
    event = CODEC.from_json(example("missing_episode"))
    event["subject"]["nhs_number"] = bad
    with pytest.raises(CodecError) as err:
        CODEC.encode(event)
    assert "subject.nhs_number: not an NHS number" in str(err.value)
    assert bad not in str(err.value)


def test_json_input_is_stored_as_canonical_digits() -> None:
    obj = example("missing_episode")
    obj["subject"]["nhs_number"] = "943 476 5919"
    record = CODEC.from_json(obj)
    assert record["subject"]["nhs_number"] == VALID
    obj["subject"]["nhs_number"] = "943 476 5918"
    with pytest.raises(CodecError, match="subject.nhs_number: not an NHS number"):
        CODEC.from_json(obj)


def test_the_api_refuses_an_invalid_nhs_number_before_anything_is_sent() -> None:
    # Publisher.encode is Intake.encode: nothing is sent before it passes.
    pub = Intake(agency="devon-cornwall-police", codec=CODEC)
    event = CODEC.from_json(example("missing_episode"))
    event["subject"]["nhs_number"] = "943 476 5918"
    with pytest.raises(EncodingError, match="subject.nhs_number: not an NHS number"):
        pub.encode(event)
    event["subject"]["nhs_number"] = "943-476-5919"
    data = pub.encode(event)
    assert CODEC.decode(data)["subject"]["nhs_number"] == VALID


def test_publish_refuses_an_invalid_nhs_number_and_sends_nothing(tmp_path: Path) -> None:
    event = example("missing_episode")
    event["subject"]["nhs_number"] = "9434765918"
    # No broker at this address: the refusal happens before any connection.
    env = {"SAFESHARE_BOOTSTRAP": "127.0.0.1:1", "SAFESHARE_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "publish", "--agency",
         "devon-cornwall-police", "-"],
        input=json.dumps(event), capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, **env},
    )
    assert out.returncode != 0
    assert "subject.nhs_number: not an NHS number" in out.stderr
    assert "nothing was sent" in out.stderr
    assert "9434765918" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.kafka
def test_an_invalid_nhs_number_that_arrives_anyway_is_quarantined_never_shared(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    good = CODEC.encode(CODEC.from_json(example("missing_episode")))
    assert good.count(VALID.encode()) == 1
    # An agency system that skipped the checks: same bytes, last digit changed.
    forged = good.replace(VALID.encode(), b"9434765918")
    prod = make_producer(kafka_bootstrap)
    prod.send(topics.ingest("devon-cornwall-police"), forged)
    prod.flush()
    prod.close()

    run_router(kafka_bootstrap, s)

    quarantined = [
        CODEC.decode(r.value or b"", "safeshare.QuarantineRecord")
        for r in read_all(kafka_bootstrap, topics.quarantine)
    ]
    assert len(quarantined) == 1
    assert "subject.nhs_number: not an NHS number" in quarantined[0]["detail"]
    assert "9434765918" not in quarantined[0]["detail"]
    assert quarantined[0]["original"] == forged
    for subscriber in policy.subscribers:
        assert read_all(kafka_bootstrap, topics.feed(subscriber.id), timeout_s=1.0) == []


def test_the_check_digit_is_the_weighted_sum_for_every_kind_of_input() -> None:
    # The ASCII fast path against the definition (weights 10..2, modulus 11).
    rng = random.Random(11)
    nines = [f"{rng.randrange(10**9):09d}" for _ in range(5_000)] + ["000000000", "999999999"]
    for nine in nines:
        check = 11 - sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True)) % 11
        assert nhs_check_digit(nine) == (0 if check == 11 else None if check == 10 else check)
    # Other digits int() reads (the slow path) and wrong lengths still answer as before.
    assert nhs_check_digit("٤٠١٠٢٣٢١٣") == nhs_check_digit("401023213")
    with pytest.raises(ValueError):
        nhs_check_digit("12345678")
