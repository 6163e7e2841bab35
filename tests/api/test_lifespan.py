"""What the app's lifespan does around serving, beyond starting and stopping its services."""

from __future__ import annotations

import gc

from asgi_lifespan import LifespanManager

from app.config import Settings
from app.main import create_app


async def test_what_lives_as_long_as_the_app_is_frozen_while_it_serves(
    settings: Settings,
) -> None:
    """Objects that exist once the services run are moved out of the cyclic collector's
    generations (`gc.freeze`): a full collection no longer walks them (90-110 ms of the event
    loop in a burst of 50 builds, bench/RESULTS.md). At shutdown they are handed back, so an
    app stopped in a longer-lived process (the tests) can still be collected."""
    gc.unfreeze()
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=60):
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, the ORM's metadata, the services
        services = application.state.services
        assert not any(o is services for o in gc.get_objects())
    assert gc.get_freeze_count() == 0
