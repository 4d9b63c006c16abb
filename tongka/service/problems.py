"""Errors as RFC 9457 problem details (``application/problem+json``) carrying the stable code.

The status comes from the error's class (input 400, state 409) unless its code says better;
the body's ``code`` is the same code the command line prints and docs/error-codes.md explains.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clearing.errors import InputError, StateError, TongkaError
from tariffs.error_codes import ErrorCode
from tariffs.errors import TariffError

PROBLEM_JSON = "application/problem+json"

# Each code's HTTP status, from the one error-code table (docs/error-codes.md); a code without
# one takes its class's: input 400, state 409, anything else 500.
STATUS_BY_CODE: dict[str, int] = {
    c.value: c.http_status for c in ErrorCode if c.http_status is not None
}


class ApiError(TongkaError):
    """An error only the service raises (forbidden, not found, ...), with its HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


def forbidden(what: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", f"your key's role may not {what}")


def not_found(what: str) -> ApiError:
    """404 for what does not exist and for another party's resource alike (never confirm that
    someone else's exists)."""
    return ApiError(404, "NOT_FOUND", f"{what} not found")


def status_of(exc: Exception) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    code = getattr(exc, "code", None)
    if code in STATUS_BY_CODE:
        return STATUS_BY_CODE[code]
    if isinstance(exc, InputError | TariffError):
        return 400 if isinstance(exc, InputError) else 422
    if isinstance(exc, StateError):
        return 409
    return 500


def problem(status: int, code: str, detail: str, *, instance: str = "",
            title: str = "", **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://tongka.example/errors/{code}",
        "title": title or code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _tongka(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TongkaError)
    request.state.error_code = exc.code
    extra = {"job_id": exc.job_id} if hasattr(exc, "job_id") else {}
    return problem(status_of(exc), exc.code, str(exc.args[0]), instance=request.url.path, **extra)


def _tariff(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TariffError)
    request.state.error_code = exc.code
    return problem(422, exc.code, "; ".join(str(p) for p in exc.problems[:20]),
                   instance=request.url.path)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 401: "AUTH_REQUIRED"}.get(
        exc.status_code, "REQUEST_INVALID" if exc.status_code < 500 else "INTERNAL_ERROR")
    request.state.error_code = code
    response = problem(exc.status_code, code, str(exc.detail), instance=request.url.path)
    for name, value in (exc.headers or {}).items():  # e.g. Allow on a 405
        response.headers[name] = value
    return response


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    request.state.error_code = "REQUEST_INVALID"
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem(422, "REQUEST_INVALID", detail, instance=request.url.path, errors=errors)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request.state.error_code = "INTERNAL_ERROR"
    return problem(500, "INTERNAL_ERROR", f"unexpected {type(exc).__name__}; it was logged",
                   instance=request.url.path)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TongkaError, _tongka)
    app.add_exception_handler(TariffError, _tariff)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)


# The problem body, for the OpenAPI schema of every error response.
PROBLEM_SCHEMA: dict[str, Any] = {
    "content": {PROBLEM_JSON: {"schema": {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"},
            "code": {"type": "string"}, "instance": {"type": "string"},
        },
    }}},
    "description": "An RFC 9457 problem with the stable error code.",
}
