"""Errors the services raise; app/main.py turns them into JSON answers (`{"detail": ...}`)."""

from __future__ import annotations

from typing import Any

# What a client is told of an unexpected error: the trace stays in the service log.
INTERNAL_ERROR = "internal error; see the service log"


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
