"""The FastAPI application: routes, problem details, metrics, the audit trail and the job worker.

``create_app`` takes an open ``Centre`` so tests and ``tongka serve`` build the same application;
the worker starts with the application (lifespan) and first marks the jobs a stopped server
left behind as failed (``tongka.jobs.fail_interrupted``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from tongka import audit, jobs
from tongka.service.centre import Centre
from tongka.service.problems import PROBLEM_SCHEMA, install
from tongka.service.routes import batches, days, health, keys, ledger, risk
from tongka.service.settle_job import run_settlement
from tongka.web import pages

log = logging.getLogger("tongka.service")
READS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED = frozenset({401, 403, 404})  # a 404 to a known caller may hide another party's resource


def create_app(centre: Centre, *, run_jobs: bool = True) -> FastAPI:
    """The service over ``centre``; ``run_jobs=False`` leaves queued jobs for another server."""
    worker = jobs.Worker(
        centre.engine,
        lambda job, progress: run_settlement(centre, job, progress),
        on_done=lambda job, seconds: _job_done(centre, job, seconds),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_jobs:
            failed = jobs.fail_interrupted(centre.engine)
            if failed:
                log.warning("%d job(s) left by a stopped server marked failed", failed)
            worker.start()
        try:
            yield
        finally:
            if run_jobs:
                worker.stop()

    app = FastAPI(
        title="Tongka clearing centre",
        version="1",
        summary="Fare clearing for the Wuhan metropolitan circle (8+1).",
        openapi_url="/v1/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
        responses={
            400: PROBLEM_SCHEMA, 401: PROBLEM_SCHEMA, 403: PROBLEM_SCHEMA, 404: PROBLEM_SCHEMA,
            409: PROBLEM_SCHEMA, 422: PROBLEM_SCHEMA,
        },
    )
    app.state.centre = centre
    app.state.worker = worker
    install(app)
    for module in (health, keys, batches, days, ledger, risk):
        app.include_router(module.router)
    pages.register(app)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        centre.metrics.requests.labels(template, request.method, str(response.status_code)).inc()
        centre.metrics.latency.labels(template).observe(time.perf_counter() - started)
        principal = getattr(request.state, "principal", None)
        status = response.status_code
        if request.method not in READS or status in (401, 403) or (
            status == 404 and principal is not None
        ):
            _audit(centre, request, template, status, principal)
        return response

    return app


def _audit(centre: Centre, request: Request, template: str, status: int, principal: object
           ) -> None:
    try:
        audit.record(
            centre.engine,
            key_id=getattr(principal, "key_id", None),
            role=getattr(principal, "name", None),
            action=f"{request.method} {template}",
            resource=request.url.path,
            outcome=status,
            # an error's code; else what the route says it did (a deny-list clearing's ids)
            detail=(getattr(request.state, "error_code", "")
                    or getattr(request.state, "audit_detail", "") or ""),
        )
    except Exception:  # noqa: BLE001 - the response stands; the failure is logged loudly
        log.exception("could not write the audit event for %s %s", request.method, template)


def _job_done(centre: Centre, job: jobs.JobView, seconds: float) -> None:
    final = jobs.get(centre.engine, job.id)
    centre.metrics.jobs.labels(job.kind, final.state if final else "unknown").observe(seconds)
