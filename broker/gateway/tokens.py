"""OAuth2 client credentials (RFC 6749 §4.4) for callers without a client certificate.

An operator registers a client (``safeshare keys oauth-client --agency ID``):
the gateway keeps the client id, the principal it acts as and the SHA-256 of
its secret (``$SAFESHARE_HOME/gateway/oauth-clients.json``); the secret is
printed once. ``POST /v1/oauth/token`` with ``grant_type=client_credentials``
(form body, or HTTP Basic) returns a bearer token valid for
:data:`TOKEN_TTL_S`: ``v1.<base64url claims>.<base64url HMAC-SHA256>``, the
claims being the principal's URI, the client id and the expiry. The HMAC
key is kept in a file (``$SAFESHARE_HOME/gateway/token.key``, mode 0600,
made on first use), so a token outlives a restart of the gateway until it
expires; deleting the file revokes every token at the next start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as chmac

from broker.gateway.pki import Principal

TOKEN_TTL_S = 600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    principal: Principal
    secret_sha256: str


class OAuthClients:
    """The registered clients, from a JSON file (absent file: none)."""

    def __init__(self, clients: dict[str, OAuthClient]) -> None:
        self._clients = clients

    @classmethod
    def load(cls, path: Path) -> OAuthClients:
        if not path.exists():
            return cls({})
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls({cid: OAuthClient(cid, Principal.parse(v["principal"]), v["secret_sha256"])
                    for cid, v in raw.items()})

    @staticmethod
    def register(path: Path, principal: Principal) -> tuple[str, str]:
        """Add a client acting as ``principal``; (client id, secret), the secret shown once."""
        raw = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        client_id = f"{principal.kind}-{principal.id}-{secrets.token_hex(4)}"
        secret = secrets.token_urlsafe(32)
        raw[client_id] = {"principal": principal.uri,
                          "secret_sha256": hashlib.sha256(secret.encode()).hexdigest()}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1, sort_keys=True)
        return client_id, secret

    def authenticate(self, client_id: str, secret: str) -> Principal | None:
        c = self._clients.get(client_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if c is None or not _hmac.compare_digest(digest, c.secret_sha256):
            return None
        return c.principal


class TokenIssuer:
    """Issues and checks the gateway's bearer tokens (HMAC-SHA256, one key per process)."""

    def __init__(self, key: bytes | None = None, ttl_s: int = TOKEN_TTL_S) -> None:
        self._key = key or secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def _mac(self, data: bytes) -> bytes:
        h = chmac.HMAC(self._key, hashes.SHA256())
        h.update(data)
        return h.finalize()

    def issue(self, principal: Principal, now: float | None = None,
              client_id: str = "") -> str:
        exp = int((now if now is not None else time.time()) + self.ttl_s)
        claims = _b64(json.dumps({"sub": principal.uri, "cid": client_id, "exp": exp},
                                 separators=(",", ":")).encode())
        return f"v1.{claims}.{_b64(self._mac(claims.encode()))}"

    def verify(self, token: str, now: float | None = None) -> Principal | None:
        """The principal of a valid, unexpired token, else None."""
        found = self.claims(token, now)
        return None if found is None else found[0]

    def claims(self, token: str, now: float | None = None) -> tuple[Principal, str] | None:
        """(principal, client id) of a valid, unexpired token, else None."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "v1":
            return None
        try:
            mac = _unb64(parts[2])
            h = chmac.HMAC(self._key, hashes.SHA256())
            h.update(parts[1].encode())
            h.verify(mac)
            claims = json.loads(_unb64(parts[1]))
            if int(claims["exp"]) < (now if now is not None else time.time()):
                return None
            return Principal.parse(str(claims["sub"])), str(claims.get("cid", ""))
        except Exception:  # noqa: BLE001 - a malformed or forged token is simply not valid
            return None
