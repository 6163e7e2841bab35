"""The pipeline_service client: reads a pipeline's current workflow YAML."""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

from app.errors import NotFound, UpstreamError
from app.models.types import check_text

log = logging.getLogger(__name__)


class PipelineClient:
    """One shared httpx.AsyncClient for the process; connection errors are retried by the
    transport, other failures are answered as 502 (not the caller's fault)."""

    def __init__(self, base_url: str, *, yaml_field: str, timeout: float, retries: int = 2) -> None:
        self.base_url = base_url.rstrip("/")
        self.yaml_field = yaml_field
        self._client = httpx.AsyncClient(
            timeout=timeout, transport=httpx.AsyncHTTPTransport(retries=retries)
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def workflow_yaml(self, pipeline_id: str) -> str:
        # The id is validated (PipelineId) and quoted anyway: whatever reaches the upstream path
        # is one path segment, never a query, a fragment or a `..`.
        url = f"{self.base_url}/api/v1/pipelines/{quote(pipeline_id, safe='')}"
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            log.warning("pipeline_service unreachable at %s: %s", url, exc)
            raise UpstreamError(f"pipeline_service is unreachable: {type(exc).__name__}") from exc
        if response.status_code == 404:
            raise NotFound(f"pipeline '{pipeline_id}' not found in pipeline_service")
        if response.status_code != 200:
            raise UpstreamError(
                f"pipeline_service answered {response.status_code} for pipeline '{pipeline_id}'"
            )
        try:
            value = response.json()[self.yaml_field]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(
                f"pipeline_service's answer for '{pipeline_id}' has no '{self.yaml_field}' field"
            ) from exc
        if not isinstance(value, str):
            raise UpstreamError(f"pipeline_service's '{self.yaml_field}' is not a string")
        try:
            check_text(value)
        except ValueError as exc:
            raise UpstreamError(f"pipeline_service's '{self.yaml_field}' {exc}") from None
        return value
