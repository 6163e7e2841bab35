"""Errors the services raise; app/main.py turns them into JSON answers (`{"detail": ...}`)."""

from __future__ import annotations

import logging
from typing import Any

# What a client is told of an unexpected error: the trace stays in the service log.
INTERNAL_ERROR = "internal error; see the service log"

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500

    def __init__(self, detail: Any) -> None:
        super().__init__(str(detail))
        self.detail = detail


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Invalid(ServiceError):
    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


class UpstreamError(ServiceError):
    """pipeline_service failed: not the caller's fault."""

    status_code = 502


class Unavailable(ServiceError):
    """A dependency of the request (the actions' git server) failed: retry later."""

    status_code = 503


def answer(exc: Exception, request: str) -> tuple[int, Any]:
    """The status and `detail` a client is answered for `exc` raised by `request` ("GET /path"):
    a ServiceError's own; anything else is a 500 without internals, logged here with its trace.
    Shared by the app's exception handlers and the SSE stream's check, which runs outside them
    (app/api/event_stream.py)."""
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.detail
    log.error("unhandled error on %s", request, exc_info=exc)
    return 500, INTERNAL_ERROR
