"""The OpenAPI document tells every status a route answers, with the body it really has.

Applied once to the built app (`document_responses`), so each router keeps its routes short:
errors are `{"detail": ...}` (a message, or for 422 a list of problems: request validation
problems with `loc`/`msg`/`type`, workflow problems with `line`/`column`/`message`). Also makes a
405 list every method its path supports in `Allow`, not only those of the first matching route.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

_MESSAGE = {"type": "string"}
_VALIDATION_PROBLEM = {
    "type": "object",
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
    "required": ["loc", "msg", "type"],
}
_WORKFLOW_PROBLEM = {
    "type": "object",
    "properties": {
        "line": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "column": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "message": {"type": "string"},
    },
    "required": ["message"],
}


def _error(description: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": detail},
                    "required": ["detail"],
                }
            }
        },
    }


_ERRORS: dict[int, dict[str, Any]] = {
    400: _error("The body could not be read", _MESSAGE),
    401: _error("Missing or invalid bearer token (API_TOKENS is set)", _MESSAGE),
    403: _error("The token is read-only", _MESSAGE),
    404: _error("Unknown build (or pipeline, in pipeline_service)", _MESSAGE),
    409: _error("Conflicts with the build's state", _MESSAGE),
    413: _error("Request body too large", _MESSAGE),
    422: _error(
        "Invalid input: a message, or a list of problems (request validation problems with "
        "`loc`/`msg`/`type`; workflow problems with `line`/`column`/`message`)",
        {
            "anyOf": [
                _MESSAGE,
                {"type": "array", "items": {"anyOf": [_VALIDATION_PROBLEM, _WORKFLOW_PROBLEM]}},
            ]
        },
    ),
    500: _error("Internal error (details only in the service log)", _MESSAGE),
    502: _error("pipeline_service failed or is unreachable", _MESSAGE),
}


def _codes(path: str, method: str) -> set[int]:
    writes = method in {"post", "put", "patch", "delete"}
    codes = {401, 422, 500}
    if writes:
        codes |= {400, 403, 413}
    if "{" in path:  # a build, artifact or cache named in the path may not exist
        codes.add(404)
    if writes and "{" in path:
        codes.add(409)
    if writes and path.endswith("/builds"):
        codes |= {404, 502}  # the pipeline's YAML comes from pipeline_service
    return codes


def _path_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)))


def document_responses(app: FastAPI, api_prefix: str = "/api/") -> None:
    """Post-process the generated document (rather than each route), so it holds whatever
    routers are included and however FastAPI nests them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(api_prefix):
                continue
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for code in sorted(_codes(path, method)):
                    # 422 replaces FastAPI's default, whose schema fits validation errors only.
                    if code == 422 or str(code) not in responses:
                        responses[str(code)] = _ERRORS[code]
                if method == "post" and path.endswith("/builds") and "201" in responses:
                    # An Idempotency-Key repeat answers 200 with the first build.
                    responses.setdefault(
                        "200",
                        {**responses["201"], "description": "A repeated Idempotency-Key"},
                    )
        schema.setdefault("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override

    @app.exception_handler(405)
    async def _method_not_allowed(request: Request, exc: Exception) -> Response:
        allowed = sorted(
            method.upper()
            for template, operations in app.openapi().get("paths", {}).items()
            if _path_pattern(template).fullmatch(request.url.path)
            for method in operations
        )
        detail = exc.detail if isinstance(exc, StarletteHTTPException) else "Method Not Allowed"
        return JSONResponse(
            {"detail": detail}, status_code=405, headers={"Allow": ", ".join(allowed)}
        )
