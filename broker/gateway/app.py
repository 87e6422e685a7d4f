"""The gateway's ASGI application (FastAPI), built from a :class:`GatewayConfig`.

Kafka clients are made when the application starts (lifespan) and closed when
it stops; the OpenAPI description (:func:`openapi_document`) needs none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from broker.clock import Clock
from broker.codec import Codec
from broker.codec.times import DEFAULT_BOUNDS, TimeBounds
from broker.gateway import errors, events, feed_routes, receipts, token_route
from broker.gateway.consultations import Recorder
from broker.gateway.limits import Limits, LimitsMiddleware
from broker.gateway.publishing import EventDesk
from broker.gateway.tokens import OAuthClients, TokenIssuer
from broker.kafka.producer import Producer, make_producer
from broker.kafka.writers import Writers
from broker.keyfiles import load_or_create_secret
from broker.loop.api import Acknowledger
from broker.policy import Policy
from broker.topics import DEFAULT, Topics

TITLE = "Safeshare gateway"
VERSION = "1"


@dataclass
class GatewayConfig:
    bootstrap: str
    topics: Topics = DEFAULT
    codec: Codec | None = None
    policy: Policy | None = None
    signing_keys: Path | None = None
    """Keys of the agencies that delegate signing to the gateway (``<agency>.pem``)."""
    limits: Limits = field(default_factory=Limits)
    oauth_clients: Path | None = None
    """Registered OAuth2 clients (``safeshare keys oauth-client``); None: none."""
    token_key: Path | None = None
    """The bearer tokens' HMAC key file (made on first use, kept across restarts);
    None: a key per process (a restart revokes every token)."""
    clock: Clock | None = None
    time_bounds: TimeBounds = DEFAULT_BOUNDS
    """How far ahead of the clock an event's times may be (SAFESHARE_FUTURE_SKEW_S)."""
    reader_key: bytes | None = None
    """Keys the audit log's pseudonyms of people (``keys/reader-pseudonym.key``);
    None: a random key per process (see broker.gateway.consultations)."""
    workspace: Any = None
    """A :class:`broker.workspace.WorkspaceConfig` to serve the practitioners' pages too."""


def create_app(config: GatewayConfig | None) -> FastAPI:
    """The application; ``config=None`` gives one fit only for its OpenAPI description."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config is None:
            yield
            return
        codec = config.codec or Codec.default()

        def new_producer() -> Producer:
            return make_producer(config.bootstrap, linger_ms=0)

        producer = new_producer()
        app.state.recorder = Recorder(producer, config.topics, config.clock,
                                      config.reader_key, new_producer=new_producer)
        app.state.desk = EventDesk(
            bootstrap=config.bootstrap,
            topics=config.topics,
            codec=codec,
            policy=config.policy,
            signing_keys=config.signing_keys,
            clock=config.clock,
            max_events=config.limits.max_events,
            on_signed_for=app.state.recorder.signed_for,
            time_bounds=config.time_bounds,
        )
        app.state.desk.warm()
        app.state.audit_log = receipts.log_cache()
        app.state.tokens = TokenIssuer(
            load_or_create_secret(config.token_key) if config.token_key is not None else None)
        app.state.oauth_clients = OAuthClients.load(config.oauth_clients) if (
            config.oauth_clients is not None) else OAuthClients({})
        # A subscriber's acknowledger, made again if its producer broke.
        app.state.acks = Writers[str, Acknowledger](
            "gateway acknowledger", lambda subscriber: Acknowledger(
                bootstrap=config.bootstrap, subscriber=subscriber, topics=config.topics,
                codec=codec, clock=config.clock))
        app.state.config = config
        app.state.codec = codec
        workspace = getattr(app.state, "workspace", None)
        if workspace is not None:
            workspace.start()
        try:
            yield
        finally:
            if workspace is not None:
                workspace.close()
            app.state.desk.close()
            app.state.acks.close()
            producer.close()

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=(
            "HTTPS gateway to the Safeshare broker for agencies and subscribers without a "
            "Kafka client. Every call authenticates with a client certificate from the "
            "partnership CA (mutual TLS); a caller acts only as itself."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(events.router)
    app.include_router(feed_routes.router)
    app.include_router(receipts.router)
    app.include_router(token_route.router)
    if config is not None and config.workspace is not None:
        from broker.workspace import mount  # the pages are optional; the API needs none

        mount(app, config.workspace, config.codec)
    app.add_middleware(LimitsMiddleware, limits=config.limits if config else Limits())
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 description, as committed in docs/openapi.json."""
    return create_app(None).openapi()


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
