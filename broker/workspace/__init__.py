"""The MASH workspace: server-rendered pages for practitioners (identity reviews
for deciding teams, broker/workspace/identity.py; the DPO's reports,
broker/workspace/dpo.py) on the gateway's app.

:func:`mount` adds the pages (``/workspace/...``) and their static files to a
gateway application; the gateway's lifespan starts and stops the workspace
(feed and clock followers) when it starts and stops.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from broker.codec import Codec
from broker.workspace.dpo import router as dpo_router
from broker.workspace.identity import router as identity_router
from broker.workspace.render import HERE, DpoConfig, Workspace, WorkspaceConfig
from broker.workspace.views import router

__all__ = ["DpoConfig", "Workspace", "WorkspaceConfig", "mount"]


def mount(app: FastAPI, config: WorkspaceConfig, codec: Codec | None = None) -> Workspace:
    """Add the workspace to ``app``; call :meth:`Workspace.start` once Kafka is wanted."""
    ws = Workspace(config, codec or Codec.default())
    app.state.workspace = ws
    app.include_router(router)
    app.include_router(dpo_router)
    app.include_router(identity_router)
    app.mount("/workspace/static", StaticFiles(directory=HERE / "static"),
              name="workspace-static")
    return ws
