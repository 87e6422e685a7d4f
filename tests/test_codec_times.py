"""Plausible times (broker.codec.times): the floor, the future skew at the injected
clock, and occurred-after-reported, for the codec, the router core and config."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from broker import config
from broker.codec import EncodingError
from broker.codec.times import DEFAULT_FUTURE_SKEW_MS, FLOOR_MS, TimeBounds
from broker.errors import ConfigError
from tests.helpers import CODEC, example

NOW = 1_795_000_000_000  # 2026-11-18
SKEW = DEFAULT_FUTURE_SKEW_MS


def _event(**times: Any) -> dict[str, Any]:
    event = CODEC.from_json(example("missing_episode"))
    for name, value in times.items():
        if name in ("started_at", "ended_at"):
            event["payload"][1][name] = value
        else:
            event[name] = value
    return event


def _problems(event: dict[str, Any], now: int = NOW, bounds: TimeBounds | None = None) -> str:
    try:
        CODEC.check_times(event, now, bounds or TimeBounds())
    except EncodingError as exc:
        return str(exc)
    return ""


def test_the_example_event_is_plausible() -> None:
    assert _problems(_event()) == ""


@pytest.mark.parametrize(
    ("times", "says"),
    [
        ({"reported_at": -1}, "reported_at: before 2000-01-01T00:00:00Z"),
        ({"occurred_at": datetime(1900, 1, 1, tzinfo=UTC)}, "occurred_at: before 2000-01-01"),
        ({"occurred_at": FLOOR_MS - 1}, "occurred_at: before 2000-01-01"),
        ({"occurred_at": datetime(9999, 12, 31, tzinfo=UTC)}, "occurred_at: in the future"),
        ({"reported_at": NOW + SKEW + 1}, "reported_at: in the future (more than 300 s"),
        ({"started_at": 0}, "payload.MissingEpisode.started_at: before 2000-01-01"),
        ({"ended_at": NOW + 86_400_000}, "payload.MissingEpisode.ended_at: in the future"),
        ({"occurred_at": NOW - 1000, "reported_at": NOW - 1000 - SKEW - 1},
         "occurred_at: after reported_at"),
    ],
)
def test_implausible_times_are_refused_naming_the_field(times: dict[str, Any], says: str) -> None:
    problems = _problems(_event(**times))
    assert says in problems
    assert "Jamie" not in problems


@pytest.mark.parametrize(
    "times",
    [
        {"occurred_at": FLOOR_MS, "reported_at": FLOOR_MS},
        {"reported_at": NOW + SKEW, "occurred_at": NOW + SKEW},
        {"occurred_at": NOW - 1000 + SKEW, "reported_at": NOW - 1000},  # within the skew
        {"ended_at": None},  # still missing
    ],
)
def test_times_at_the_bounds_are_accepted(times: dict[str, Any]) -> None:
    assert _problems(_event(**times)) == ""


def test_the_future_is_judged_at_the_clock_given_and_the_skew_is_configurable() -> None:
    event = _event(reported_at=NOW + 60_000, occurred_at=NOW)
    assert _problems(event, now=NOW) == ""
    assert "reported_at: in the future (more than 10 s" in _problems(
        event, now=NOW, bounds=TimeBounds(future_skew_ms=10_000)
    )
    assert _problems(event, now=NOW + 60_000, bounds=TimeBounds(future_skew_ms=0)) == ""


def test_decoding_never_judges_times_so_stored_events_read_back() -> None:
    data = CODEC.encode(_event(reported_at=-1, occurred_at=datetime(9999, 1, 1, tzinfo=UTC)))
    assert CODEC.decode(data)["reported_at"] == datetime(1969, 12, 31, 23, 59, 59, 999_000, UTC)


def test_the_skew_comes_from_configuration() -> None:
    assert config.load({}).time_bounds == TimeBounds()
    assert config.load({"SAFESHARE_FUTURE_SKEW_S": "30"}).time_bounds.future_skew_ms == 30_000
    for bad in ("-1", "soon", "99999999"):
        with pytest.raises(ConfigError, match="SAFESHARE_FUTURE_SKEW_S"):
            config.load({"SAFESHARE_FUTURE_SKEW_S": bad})


def test_the_router_quarantines_a_consent_record_with_an_implausible_time() -> None:
    from tests.test_routing_consent import RHI, T, _core, consent, kinds, on  # noqa: PLC0415

    event = CODEC.decode(consent(RHI))
    event["payload"][1]["recorded_at"] = datetime(1900, 1, 1, tzinfo=UTC)
    data = CODEC.encode(event)
    core = _core()
    routed = core.handle(on(T.consent(RHI), data))
    assert routed.quarantined == "SCHEMA_INVALID" and kinds(routed) == ["QUARANTINED"]
    q = CODEC.decode(routed.outputs[0].value, "safeshare.QuarantineRecord")
    assert q["original"] == data
    assert q["detail"].startswith("payload.ConsentRecord.recorded_at: before 2000-01-01")
    assert kinds(core.handle(on(T.consent(RHI), consent(RHI)))) == ["CONSENT"]
