"""Settings from the environment: each bad value refused in one line naming its variable.

An operator who mistypes a setting must be told which one and why, before any
connection is tried; these need no Kafka, so `make check` runs them.
"""

from __future__ import annotations

import pytest

from broker import config
from broker.errors import ConfigError
from tests.helpers import safeshare


def test_the_batch_bound_comes_from_configuration() -> None:
    assert config.load({}).router_max_batch == config.DEFAULT_ROUTER_MAX_BATCH == 2500
    assert config.load({"SAFESHARE_ROUTER_MAX_BATCH": "400"}).router_max_batch == 400
    for bad in ("0", "-5", "many", "50001", "2.5"):
        with pytest.raises(ConfigError, match="SAFESHARE_ROUTER_MAX_BATCH: .* from 1 to 50000"):
            config.load({"SAFESHARE_ROUTER_MAX_BATCH": bad})


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"SAFESHARE_SECURITY_PROTOCOL": "TLS"},
            "SAFESHARE_SECURITY_PROTOCOL: unknown protocol 'TLS'",
        ),
        (
            {"SAFESHARE_SECURITY_PROTOCOL": "SASL_SSL", "SAFESHARE_SASL_MECHANISM": "GSSAPI"},
            "SAFESHARE_SASL_MECHANISM: unknown mechanism 'GSSAPI'",
        ),
        (
            {"SAFESHARE_SECURITY_PROTOCOL": "SASL_SSL", "SAFESHARE_SASL_USERNAME": "police"},
            "SAFESHARE_SECURITY_PROTOCOL=SASL_SSL needs SAFESHARE_SASL_USERNAME and "
            "SAFESHARE_SASL_PASSWORD_FILE",
        ),
        (
            {"SAFESHARE_SECURITY_PROTOCOL": "SSL", "SAFESHARE_SSL_CERTFILE": "/x/cert.pem"},
            "SAFESHARE_SSL_CERTFILE and SAFESHARE_SSL_KEYFILE go together",
        ),
        ({"SAFESHARE_NAMESPACE": "no spaces please"}, "SAFESHARE_NAMESPACE: "),
        ({"SAFESHARE_FUTURE_SKEW_S": "soon"}, "SAFESHARE_FUTURE_SKEW_S: 'soon' is not a number"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_variable(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config.load(env)
    assert str(refused.value).startswith(says)
    assert "\n" not in str(refused.value)


def test_the_command_line_refuses_a_bad_setting_in_one_line() -> None:
    done = safeshare("route", env={"SAFESHARE_ROUTER_MAX_BATCH": "lots"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert (
        "SAFESHARE_ROUTER_MAX_BATCH: 'lots' is not a number of events from 1 to 50000" in lines[0]
    )
