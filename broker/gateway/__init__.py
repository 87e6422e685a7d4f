"""The HTTPS gateway: agencies publish and subscribers read without a Kafka client.

- :mod:`~broker.gateway.app`: the FastAPI application and its configuration;
- :mod:`~broker.gateway.server`: uvicorn with TLS >= 1.2 and client certificates;
- :mod:`~broker.gateway.pki`: the partnership CA and its certificates;
- :mod:`~broker.gateway.auth`: who is calling, and acting only as oneself;
- :mod:`~broker.gateway.publishing`: checking, signing and publishing events, idempotently;
- :mod:`~broker.gateway.events`: the event routes;
- :mod:`~broker.gateway.consultations`: the record of who read what;
- :mod:`~broker.gateway.limits`: per-caller rate and size limits;
- :mod:`~broker.gateway.client`: a small client that signs with the agency's own key.

See docs/DESIGN.md, "Gateway", and docs/openapi.json.
"""
