"""What the web UI asks besides builds: who the caller is, and the build list's filter choices."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ReaderDep, ReadSessionDep, SettingsDep
from app.models import BuildFacets, WhoAmI
from app.services import builds as service

router = APIRouter(tags=["viewer"])


@router.get("/whoami", response_model=WhoAmI)
async def whoami(caller: ReaderDep, settings: SettingsDep) -> WhoAmI:
    """The token's name and role. A read-only token gets `can_write: false`, so the UI hides
    Cancel and Retry instead of letting them fail with 403. 401 for a missing or wrong token."""
    return WhoAmI(
        name=caller.name,
        role=caller.role,
        can_write=caller.role == "write",
        auth_enabled=bool(settings.tokens),
    )


@router.get("/build-facets", response_model=BuildFacets)
async def build_facets(session: ReadSessionDep, _caller: ReaderDep) -> BuildFacets:
    """Pipelines, branches and actors seen in the most recent 1,000 builds (sorted), for the
    build list's filter menus."""
    return await service.list_facets(session)
