"""A real gateway for tests (broker.gateway.local): uvicorn over HTTPS on a free
port, in a thread of the test process, with its own partnership CA."""

from __future__ import annotations

from broker.gateway.local import LocalGateway as Running
from broker.gateway.local import local_gateway as running_gateway

__all__ = ["Running", "running_gateway"]
