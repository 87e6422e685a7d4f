"""The one place that reads configuration.

Everything comes from environment variables (12-factor), each with a safe
default for a local run. Nothing else in the package reads ``os.environ``.

| variable                    | meaning                                                   |
|-----------------------------|-----------------------------------------------------------|
| SAFESHARE_BOOTSTRAP         | bootstrap servers of an existing cluster (host:port,...)  |
| SAFESHARE_HOME              | state directory (Kafka jars, local broker data, keys)     |
| SAFESHARE_NAMESPACE         | topic namespace (default ``safeshare``)                   |
| SAFESHARE_POLICY            | policy YAML file                                          |
| SAFESHARE_SECURITY_PROTOCOL | PLAINTEXT (default), SSL, SASL_SSL, SASL_PLAINTEXT        |
| SAFESHARE_KAFKA_VERSION     | Kafka version the local broker fetches (default pinned)   |
| SAFESHARE_NO_DOCKER         | if set, never try testcontainers                          |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker.errors import ConfigError
from broker.topics import DEFAULT_NAMESPACE, Topics

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.1.1"


@dataclass(frozen=True)
class Settings:
    bootstrap: str | None = None
    home: Path = PROJECT_ROOT / "var"
    namespace: str = DEFAULT_NAMESPACE
    policy_path: Path = PROJECT_ROOT / "deploy" / "policy" / "example-mash.yaml"
    security_protocol: str = "PLAINTEXT"
    kafka_version: str = KAFKA_VERSION
    try_docker: bool = True
    schemas_dir: Path = PROJECT_ROOT / "schemas"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return Topics(self.namespace)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    proto = env.get("SAFESHARE_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if proto not in {"PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"}:
        raise ConfigError(f"SAFESHARE_SECURITY_PROTOCOL: unknown protocol {proto!r}")
    bootstrap = env.get("SAFESHARE_BOOTSTRAP") or None
    home = Path(env.get("SAFESHARE_HOME") or PROJECT_ROOT / "var")
    try:
        namespace = Topics(env.get("SAFESHARE_NAMESPACE") or DEFAULT_NAMESPACE).namespace
    except ValueError as exc:
        raise ConfigError(f"SAFESHARE_NAMESPACE: {exc}") from exc
    policy = Path(
        env.get("SAFESHARE_POLICY") or PROJECT_ROOT / "deploy" / "policy" / "example-mash.yaml"
    )
    return Settings(
        bootstrap=bootstrap,
        home=home,
        namespace=namespace,
        policy_path=policy,
        security_protocol=proto,
        kafka_version=env.get("SAFESHARE_KAFKA_VERSION") or KAFKA_VERSION,
        try_docker=not env.get("SAFESHARE_NO_DOCKER"),
        extra={k: v for k, v in env.items() if k.startswith("SAFESHARE_")},
    )
