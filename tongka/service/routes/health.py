"""Liveness for load balancers and the Prometheus scrape; neither needs a key."""

from __future__ import annotations

import os
import tempfile

from fastapi import APIRouter, Response
from sqlalchemy import text

from tongka.service.deps import CentreDep
from tongka.service.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Database reachable and data directory writable")
def healthz(centre: CentreDep, response: Response) -> dict[str, object]:
    checks: dict[str, object] = {}
    try:
        with centre.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the health check
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with tempfile.NamedTemporaryFile(dir=centre.home, prefix=".healthz-"):
            pass
        checks["data_dir"] = "ok" if os.access(centre.home, os.W_OK) else "not writable"
    except OSError as exc:
        checks["data_dir"] = f"not writable: {exc.strerror}"
    ok = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ok else 503
    return {"status": "ok" if ok else "failing", **checks}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(centre: CentreDep) -> Response:
    return Response(centre.metrics.exposition(), media_type=CONTENT_TYPE)
