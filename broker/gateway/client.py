"""A small client of the gateway for agency systems written in Python (httpx).

It signs events with the agency's own key before sending, so the gateway never
needs that key: the signature is computed over the same Avro bytes the gateway
will publish (:class:`broker.intake.Intake`, signature null), and travels in
the event's ``signature`` field (base64), which the gateway checks against the
policy and does not change::

    with GatewayClient(url, cert=("school.pem", "school.key"), ca="ca.pem",
                       signer=AgencySigner.load("example-academy", key_path)) as gw:
        receipts = gw.publish(event_json)
"""

from __future__ import annotations

import base64
import ssl
import uuid
from types import TracebackType
from typing import Any

import httpx

from broker.codec import Codec
from broker.intake import ENVELOPE, Intake
from broker.signing import AgencySigner
from broker.signing.events import SIGNATURE_SIZE


class GatewayError(Exception):
    """The gateway refused a call; ``status`` and the error body as it came."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status}: {body.get('detail', body)}")


def sign_json(event: dict[str, Any], signer: AgencySigner, codec: Codec) -> dict[str, Any]:
    """``event`` (JSON form) with its ``signature`` made by ``signer``.

    The signed message ends with the signature value (format byte, key id,
    Ed25519 signature: :data:`SIGNATURE_SIZE` bytes), which is what the
    ``signature`` field carries.
    """
    intake = Intake(agency=signer.agency_id, codec=codec, signer=signer)
    data = intake.encode(codec.from_json({**event, "signature": None}, ENVELOPE))
    return {**event, "signature": base64.b64encode(data[-SIGNATURE_SIZE:]).decode("ascii")}


class GatewayClient:
    """Keep-alive HTTPS client with a client certificate."""

    def __init__(
        self,
        url: str,
        *,
        cert: tuple[str, str],
        ca: str,
        signer: AgencySigner | None = None,
        codec: Codec | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(*cert)
        self._http = httpx.Client(base_url=url, verify=ctx, timeout=timeout_s)
        self._signer = signer
        self._codec = codec or Codec.default()

    def publish(self, event: dict[str, Any] | list[dict[str, Any]],
                request_id: str | None = None) -> list[dict[str, Any]]:
        """Publish one event or a list; the receipts. Raises :class:`GatewayError`."""
        events = event if isinstance(event, list) else [event]
        if self._signer is not None:
            events = [sign_json(e, self._signer, self._codec) for e in events]
        r = self._http.post("/v1/events", json=events if isinstance(event, list) else events[0],
                            headers={"X-Request-ID": request_id or str(uuid.uuid4())})
        return list(self._ok(r)["receipts"])

    def feed(self, subscriber: str, purpose: str, cursor: str | None = None,
             wait_ms: int = 0, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"purpose": purpose, "wait_ms": wait_ms, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        return self._ok(self._http.get(f"/v1/feeds/{subscriber}", params=params))

    def acknowledge(self, subscriber: str, **ack: Any) -> dict[str, Any]:
        return self._ok(self._http.post(f"/v1/feeds/{subscriber}/acks", json=ack))

    def receipt(self, event_id: str) -> dict[str, Any]:
        return self._ok(self._http.get(f"/v1/events/{event_id}/receipt"))

    @staticmethod
    def _ok(r: httpx.Response) -> dict[str, Any]:
        body: dict[str, Any] = r.json()
        if r.status_code >= 400:
            raise GatewayError(r.status_code, body)
        return body

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
