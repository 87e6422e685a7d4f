"""The one place that reads configuration.

Everything comes from environment variables (12-factor), each with a safe
default for a local run. Nothing else in the package reads ``os.environ``.

| variable                    | meaning                                                   |
|-----------------------------|-----------------------------------------------------------|
| SAFESHARE_BOOTSTRAP         | bootstrap servers of an existing cluster (host:port,...)  |
| SAFESHARE_HOME              | state directory (Kafka jars, local broker data, keys);    |
|                             | default: the checkout's ``var/`` when run from a checkout,|
|                             | else the per-user data dir (``$XDG_DATA_HOME/safeshare``, |
|                             | i.e. ``~/.local/share/safeshare``; macOS                  |
|                             | ``~/Library/Application Support/safeshare``)              |
| SAFESHARE_NAMESPACE         | topic namespace (default ``safeshare``)                   |
| SAFESHARE_POLICY            | policy YAML file; default in a checkout: the example      |
|                             | ``deploy/policy/example-mash.yaml``. Installed there is no|
|                             | default (an example policy must never route real events): |
|                             | what needs a policy says to set it                        |
| SAFESHARE_SECURITY_PROTOCOL | PLAINTEXT (default), SSL, SASL_SSL, SASL_PLAINTEXT        |
| SAFESHARE_SASL_MECHANISM    | SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN           |
| SAFESHARE_SASL_USERNAME     | SASL user (principal ``User:<name>``); needed for SASL_*  |
| SAFESHARE_SASL_PASSWORD_FILE| file holding that user's password (never the password)    |
| SAFESHARE_SSL_CAFILE        | PEM CA file the broker's certificate must chain to        |
| SAFESHARE_SSL_CERTFILE      | client certificate (PEM) for mutual TLS                   |
| SAFESHARE_SSL_KEYFILE       | its private key (PEM)                                     |
| SAFESHARE_KAFKA_VERSION     | Kafka version the local broker fetches (default pinned)   |
| SAFESHARE_NO_DOCKER         | if set, never try testcontainers                          |
| SAFESHARE_PARTNERSHIP_KEYS  | directory of the router's pseudonym keys (<home>/keys/partnership) |
| SAFESHARE_FUTURE_SKEW_S     | how far in the future an event's times may be, seconds    |
|                             | (default 300: agency clocks run ahead; broker.codec.times)|
| SAFESHARE_ROUTER_MAX_BATCH  | most events a router takes into one transaction (default  |
|                             | 2500; 1-50000): larger drains a backlog faster, holds     |
|                             | more in memory until the commit                           |

The security variables become a :class:`broker.kafka.security.Credentials`,
which every Kafka client uses unless it is given other credentials.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker import resources
from broker.codec.times import DEFAULT_FUTURE_SKEW_MS, TimeBounds
from broker.errors import ConfigError
from broker.topics import DEFAULT_NAMESPACE, Topics

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout when run from one (see :data:`broker.resources.CHECKOUT`)."""
KAFKA_VERSION = "4.1.1"
#: Most events in one router transaction. Only a backlog fills it (at a steady
#: 1,000/s a poll holds tens); each transaction also costs a flush and a commit
#: round trip, so a larger batch drains a backlog faster, at the price of memory
#: held until the commit and a longer wait for the batch's first event
#: (docs/PERFORMANCE.md: 2,500 against 1,000 routed 10-50% more events a second
#: and peaked 33 MB higher).
DEFAULT_ROUTER_MAX_BATCH = 2500
MAX_ROUTER_MAX_BATCH = 50_000
EXAMPLE_POLICY = ("deploy", "policy", "example-mash.yaml")


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """The state directory when SAFESHARE_HOME is not set (module table)."""
    env = os.environ if env is None else env
    if resources.CHECKOUT is not None:
        return resources.CHECKOUT / "var"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "safeshare"
    # XDG Base Directory: a relative XDG_DATA_HOME is invalid and ignored.
    xdg = env.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "safeshare"


def default_policy() -> Path | None:
    """The example policy in a checkout; None installed (module table)."""
    return resources.CHECKOUT.joinpath(*EXAMPLE_POLICY) if resources.CHECKOUT else None


@dataclass(frozen=True)
class Settings:
    bootstrap: str | None = None
    home: Path = field(default_factory=default_home)
    namespace: str = DEFAULT_NAMESPACE
    policy_path: Path | None = field(default_factory=default_policy)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    kafka_version: str = KAFKA_VERSION
    try_docker: bool = True
    schemas_dir: Path = field(default_factory=lambda: resources.path("schemas"))
    extra: Mapping[str, str] = field(default_factory=dict)
    partnership_keys: Path | None = None
    future_skew_ms: int = DEFAULT_FUTURE_SKEW_MS
    router_max_batch: int = DEFAULT_ROUTER_MAX_BATCH

    @property
    def time_bounds(self) -> TimeBounds:
        """The plausible range of an event's times (broker.codec.times)."""
        return TimeBounds(future_skew_ms=self.future_skew_ms)

    @property
    def topics(self) -> Topics:
        return Topics(self.namespace)

    def policy_file(self) -> Path:
        """The policy file; ConfigError naming SAFESHARE_POLICY if there is none."""
        if self.policy_path is None:
            example = resources.path(*EXAMPLE_POLICY)
            raise ConfigError(
                f"no policy: set SAFESHARE_POLICY to your policy YAML file "
                f"(a commented example: {example})"
            )
        return self.policy_path

    @property
    def keys_dir(self) -> Path:
        """Where a process keeps its own secret keys (broker/keyfiles.py)."""
        return self.home / "keys"

    @property
    def partnership_keys_dir(self) -> Path:
        """The router's partnership pseudonym keys (broker/identity/pseudonym.py)."""
        return self.partnership_keys or self.keys_dir / "partnership"


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    proto = env.get("SAFESHARE_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if proto not in {"PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"}:
        raise ConfigError(f"SAFESHARE_SECURITY_PROTOCOL: unknown protocol {proto!r}")
    mechanism = (env.get("SAFESHARE_SASL_MECHANISM") or "SCRAM-SHA-512").upper()
    if mechanism not in {"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"}:
        raise ConfigError(f"SAFESHARE_SASL_MECHANISM: unknown mechanism {mechanism!r}")
    username = env.get("SAFESHARE_SASL_USERNAME") or None
    password_file = _path(env, "SAFESHARE_SASL_PASSWORD_FILE")
    if proto.startswith("SASL_") and (username is None or password_file is None):
        raise ConfigError(
            f"SAFESHARE_SECURITY_PROTOCOL={proto} needs SAFESHARE_SASL_USERNAME and "
            "SAFESHARE_SASL_PASSWORD_FILE"
        )
    certfile = _path(env, "SAFESHARE_SSL_CERTFILE")
    keyfile = _path(env, "SAFESHARE_SSL_KEYFILE")
    if (certfile is None) != (keyfile is None):
        raise ConfigError("SAFESHARE_SSL_CERTFILE and SAFESHARE_SSL_KEYFILE go together")
    bootstrap = env.get("SAFESHARE_BOOTSTRAP") or None
    home = Path(env.get("SAFESHARE_HOME") or default_home(env))
    try:
        namespace = Topics(env.get("SAFESHARE_NAMESPACE") or DEFAULT_NAMESPACE).namespace
    except ValueError as exc:
        raise ConfigError(f"SAFESHARE_NAMESPACE: {exc}") from exc
    policy = _path(env, "SAFESHARE_POLICY") or default_policy()
    return Settings(
        bootstrap=bootstrap,
        home=home,
        namespace=namespace,
        policy_path=policy,
        security_protocol=proto,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password_file=password_file,
        ssl_cafile=_path(env, "SAFESHARE_SSL_CAFILE"),
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        kafka_version=env.get("SAFESHARE_KAFKA_VERSION") or KAFKA_VERSION,
        try_docker=not env.get("SAFESHARE_NO_DOCKER"),
        extra={k: v for k, v in env.items() if k.startswith("SAFESHARE_")},
        partnership_keys=_path(env, "SAFESHARE_PARTNERSHIP_KEYS"),
        future_skew_ms=_future_skew_ms(env),
        router_max_batch=_router_max_batch(env),
    )


def _future_skew_ms(env: Mapping[str, str]) -> int:
    seconds = _bounded_int(env, "SAFESHARE_FUTURE_SKEW_S", 0, 86_400, "seconds")
    return DEFAULT_FUTURE_SKEW_MS if seconds is None else seconds * 1000


def _router_max_batch(env: Mapping[str, str]) -> int:
    events = _bounded_int(env, "SAFESHARE_ROUTER_MAX_BATCH", 1, MAX_ROUTER_MAX_BATCH, "events")
    return DEFAULT_ROUTER_MAX_BATCH if events is None else events


def _bounded_int(env: Mapping[str, str], name: str, low: int, high: int, unit: str) -> int | None:
    """The whole number ``name`` holds, from ``low`` to ``high``; None when unset.
    Anything else is refused in one line naming the variable and the range."""
    text = env.get(name)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}: {text!r} is not a number of {unit} from {low} to {high}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name)
    return Path(value) if value else None
