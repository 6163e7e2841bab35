"""Build secrets at rest: encrypted, never returned, purged after a retention period.

What is secret: the `secrets` map of `POST /builds`, and variables whose names mark them secret
(TOKEN, SECRET, PASSWORD, KEY, ... see app/logs/masking.py). Both are sealed together into one
Fernet token (AES-128-CBC + HMAC-SHA256, from the `cryptography` package: a vetted recipe
rather than our own construction) stored in `builds.secrets_sealed`; the `variables` column keeps
only `***` in their place. `build_secrets()` is the one way back, for the executor.

The key comes from `SECRETS_KEY` (comma-separated Fernet keys: the first encrypts, all decrypt,
so keys can be rotated). Without it, the embedded default (SQLite) generates one once and keeps
it in a file next to the database (mode 0600); on Postgres, where replicas must share it, there
is no key: secret-named variables are then kept as before (in the clear, masked in every answer)
and a `secrets` map is refused with a clear 422.

A periodic task (owned by the lifespan) purges the sealed secrets of builds finished more than
`SECRETS_RETENTION_DAYS` ago; retrying such a build is refused with a message saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import update
from sqlmodel import col

from app.config import Settings
from app.db import Database
from app.errors import Conflict, Invalid
from app.logs.masking import MASK, is_secret_name
from app.models import Build
from app.models.types import utcnow

log = logging.getLogger(__name__)
KEY_FILE_SUFFIX = ".key"


class SecretsUnavailable(RuntimeError):
    """Sealed secrets that cannot be opened (wrong or rotated-away key)."""


@dataclass(frozen=True)
class BuildSecrets:
    """A build's secrets in the clear: the `secrets` map and its secret-named variables."""

    secrets: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> list[str]:
        return [*self.secrets.values(), *self.variables.values()]


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, secrets: BuildSecrets) -> str:
        payload = {"secrets": secrets.secrets, "variables": secrets.variables}
        return self._fernet.encrypt(json.dumps(payload).encode()).decode()

    def open(self, token: str) -> BuildSecrets:
        try:
            payload = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError) as exc:
            raise SecretsUnavailable(
                "the build's secrets cannot be decrypted with SECRETS_KEY"
            ) from exc
        return BuildSecrets(dict(payload["secrets"]), dict(payload["variables"]))


def load_secret_box(settings: Settings) -> SecretBox | None:
    """The box for SECRETS_KEY, or for the key file next to a SQLite database (created once).
    Blocking (file I/O): call it at startup, off the event loop."""
    if settings.secrets_key:
        try:
            keys = [k.strip().encode() for k in settings.secrets_key.split(",") if k.strip()]
            return SecretBox(keys)
        except ValueError as exc:
            raise ValueError(
                "SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes each, comma-separated; "
                "generate one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            ) from exc
    if settings.sqlite_path is None:
        log.warning(
            "SECRETS_KEY is not set: secret-named variables are stored unencrypted and builds "
            "with a `secrets` map are refused; set the same SECRETS_KEY on every replica"
        )
        return None
    path = Path(f"{settings.sqlite_path.resolve()}{KEY_FILE_SUFFIX}")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once never overwrite each other's key.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
            log.info("generated the secrets key %s (keep it with the database)", path)
    return SecretBox([path.read_bytes().strip()])


def split_secret_variables(variables: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(what the `variables` column stores, the secret-named values to seal)."""
    secret = {k: v for k, v in variables.items() if is_secret_name(k)}
    stored = {k: (MASK if k in secret else v) for k, v in variables.items()}
    return stored, secret


def seal_request(
    box: SecretBox | None, variables: dict[str, str], secrets: dict[str, str] | None
) -> tuple[dict[str, str], str | None]:
    """For a new build: the variables to store and the sealed secrets (None when there are
    none, or when there is no key and only secret-named variables: those stay as before)."""
    if box is None:
        if secrets:
            raise Invalid(
                "this service has no SECRETS_KEY, so it cannot keep `secrets`; ask its operator "
                "to set one"
            )
        return variables, None
    stored, secret_vars = split_secret_variables(variables)
    if not secret_vars and not secrets:
        return variables, None
    return stored, box.seal(BuildSecrets(dict(secrets or {}), secret_vars))


def build_secrets(box: SecretBox | None, build: Build) -> BuildSecrets:
    """A build's decrypted secrets, for the executor (the `secrets` context, environment
    variables, masking). Raises Conflict when they were purged, SecretsUnavailable when the key
    cannot open them."""
    if build.secrets_sealed is None:
        if build.secrets_purged_at is not None:
            raise Conflict(
                f"the secrets of build {build.id} were purged after the retention period "
                "(SECRETS_RETENTION_DAYS); start a new build with its secrets instead"
            )
        return BuildSecrets()
    if box is None:
        raise SecretsUnavailable("the build has sealed secrets but SECRETS_KEY is not set")
    return box.open(build.secrets_sealed)


def secret_values(box: SecretBox | None, build: Build) -> list[str]:
    """Every secret value of a build, for masking: its `secrets` and secret-named variables
    (sealed or, without a key, in the clear). Never raises: what cannot be opened is skipped."""
    values = [v for k, v in build.variables.items() if is_secret_name(k) and v != MASK]
    # Purged (the build finished long ago) or no key: nothing more to mask with.
    with contextlib.suppress(Conflict, SecretsUnavailable):
        values.extend(build_secrets(box, build).values)
    return values


def retry_secrets(build: Build) -> str | None:
    """The sealed secrets a retry of `build` reuses; refused once they were purged."""
    if build.secrets_sealed is None and build.secrets_purged_at is not None:
        raise Conflict(
            f"cannot retry build {build.id}: its secrets were purged after the retention period "
            "(SECRETS_RETENTION_DAYS); start a new build with its secrets instead"
        )
    return build.secrets_sealed


class SecretsPurger:
    """Background service: every interval, forget the secrets of builds finished more than the
    retention period ago."""

    def __init__(self, db: Database, *, retention_days: float, interval_seconds: float) -> None:
        self.db = db
        self.retention = timedelta(days=retention_days)
        self.interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="secrets-purger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge_once(self) -> int:
        now = utcnow()
        async with self.db.transaction() as session:
            result = await session.exec(
                update(Build)
                .where(
                    col(Build.secrets_sealed).is_not(None),
                    col(Build.finished_at).is_not(None),
                    col(Build.finished_at) < now - self.retention,
                )
                .values(secrets_sealed=None, secrets_purged_at=now)
                .returning(col(Build.id))
            )
            purged = len(result.all())
        if purged:
            log.info("purged the secrets of %d finished build(s)", purged)
        return purged

    async def _loop(self) -> None:
        while True:
            try:
                await self.purge_once()
            except Exception:
                log.exception("purging expired build secrets failed; retrying")
            await asyncio.sleep(self.interval)
