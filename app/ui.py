"""Serving the built web UI (web/dist) and compressing what the browser downloads.

The UI is a single-page app: any path that is not the API or an operational endpoint answers
with index.html (history-mode routing). Vite names every file under /assets after a hash of its
content, so those are cached for a year; index.html is revalidated on every load so a new
deployment is picked up at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

RESERVED = ("api/", "docs", "redoc", "openapi.json", "healthz", "readyz", "metrics")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


class HashedAssets(StaticFiles):
    """StaticFiles with a year-long, immutable cache: the names change when the content does."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = IMMUTABLE
        return response


def mount_ui(app: FastAPI, dist: Path) -> None:
    """Serve the built UI at / with history-mode fallback, never shadowing the API routes.
    GET and HEAD both work on every UI route (link checkers and proxies probe with HEAD)."""
    if not (dist / "index.html").is_file():
        log.warning("web UI not built (no %s): serving the API only; run `make ui`", dist)
        return
    if (dist / "assets").is_dir():
        app.mount("/assets", HashedAssets(directory=dist / "assets"), name="assets")
    index = dist / "index.html"
    root = dist.resolve()

    @app.api_route("/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def _ui(path: str) -> FileResponse:
        if path.startswith(RESERVED):
            raise StarletteHTTPException(404, "Not Found")
        candidate = (dist / path).resolve()
        if path and candidate.is_file() and root in candidate.parents:
            return FileResponse(candidate, headers={"Cache-Control": REVALIDATE})
        return FileResponse(index, headers={"Cache-Control": REVALIDATE})


# Raw logs can be 100 MB and are read by curl and scripts at full speed; compressing them would
# cost the server CPU that the log benchmarks measure, and SSE must never be buffered by a
# compressor. Everything else the browser downloads (JSON, JS, CSS, HTML) is gzipped.
_UNCOMPRESSED_SUFFIXES = ("/logs/stream", "/logs/raw")


class Compress:
    """gzip (when the client accepts it) for everything but the log stream and the raw log:
    those routes bypass the compressor before any byte is produced."""

    def __init__(
        self, app: ASGIApp, minimum_size: int = 1024, exempt: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=6)
        # Path prefixes served as they are (artifact blobs: binary, often compressed already).
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path.endswith(_UNCOMPRESSED_SUFFIXES)
            or path.startswith(self.exempt)
        ):
            await self.app(scope, receive, send)
            return
        await self.gzip(scope, receive, send)
