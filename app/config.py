"""Settings from the environment (and `.env`). Every setting is documented in `.env.example`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _project_root() -> Path:
    """The source checkout, or (installed into a venv, as in the image) the working directory,
    which then holds alembic.ini, migrations/ and web/dist."""
    source_tree = Path(__file__).resolve().parent.parent
    return source_tree if (source_tree / "alembic.ini").is_file() else Path.cwd()


PROJECT_ROOT = _project_root()


class ApiToken:
    """One named bearer token with a role, parsed from `API_TOKENS` (`name:token:role,...`)."""

    __slots__ = ("name", "role", "token")

    def __init__(self, name: str, token: str, role: Literal["read", "write"]) -> None:
        self.name = name
        self.token = token
        self.role = role


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./ci-executor.db"
    # Connections kept per replica, and as many again on overflow (0: 20 on Postgres,
    # SQLAlchemy's 5 + 10 on SQLite); a request waits this long for one at most.
    db_pool_size: int = Field(default=0, ge=0)
    db_pool_timeout_seconds: float = Field(default=30.0, gt=0)
    queue_url: str = "memory://"
    queue_name: str = "ci.builds"
    runner: Literal["local", "kubernetes"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=10056, ge=1, le=65535)
    workspace_root: Path = Path("./workspaces")
    pipeline_service_url: str = "http://127.0.0.1:10055"
    pipeline_yaml_field: str = "workflow_yaml"
    pipeline_service_timeout_seconds: float = Field(default=10.0, gt=0)
    k8s_namespace: str = "ci"
    # Kubernetes runner (k8s area). The default image has bash, git and node, like GitHub's
    # runners, so the default shell (bash) and actions/checkout work without an `image:`.
    k8s_default_image: str = "ghcr.io/catthehacker/ubuntu:act-latest"
    runs_on_images: str = (
        "ubuntu-latest=ghcr.io/catthehacker/ubuntu:act-latest,"
        "ubuntu-24.04=ghcr.io/catthehacker/ubuntu:act-24.04,"
        "ubuntu-22.04=ghcr.io/catthehacker/ubuntu:act-22.04"
    )
    k8s_termination_grace_seconds: int = Field(default=10, ge=1)
    k8s_workspace_size_limit: str = "10Gi"
    k8s_ttl_seconds_after_finished: int = Field(default=3600, ge=0)
    k8s_marker_secret: str = ""
    kubeconfig: str = ""  # empty: in-cluster config, then the default kubeconfig
    k8s_job_deadline_seconds: int = Field(default=3600, ge=1)
    k8s_unschedulable_timeout_seconds: float = Field(default=300, gt=0)
    k8s_image_pull_timeout_seconds: float = Field(default=30, gt=0)
    k8s_cpu_request: str = ""
    k8s_memory_request: str = ""
    k8s_cpu_limit: str = ""
    k8s_memory_limit: str = ""
    k8s_run_as_user: int = Field(default=1000, ge=1)
    max_concurrent_builds: int = Field(default=4, ge=1)
    max_concurrent_jobs: int = Field(default=4, ge=1)
    api_tokens: str = ""
    lease_seconds: float = Field(default=30.0, gt=0)
    requeue_after_seconds: float = Field(default=60.0, gt=0)
    cancel_grace_seconds: float = Field(default=5.0, ge=0)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    log_flush_interval_ms: int = Field(default=100, ge=1, le=10_000)
    log_chunk_max_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    max_workflow_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_variables: int = Field(default=100, ge=0)
    max_log_append_bytes: int = Field(default=1024 * 1024, ge=1024)
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    sse_queue_size: int = Field(default=1000, ge=1)
    log_level: str = "INFO"
    # --- artifacts, caches and actions from git (app/artifacts, app/actions; docs/actions.md) ---
    artifacts_storage: Literal["directory", "s3"] = "directory"
    artifacts_dir: Path = Path("./artifact-store")
    artifacts_s3_bucket: str = ""
    artifacts_s3_prefix: str = ""
    artifacts_s3_endpoint_url: str = ""
    artifacts_s3_region: str = ""
    artifacts_s3_access_key_id: str = ""
    artifacts_s3_secret_access_key: str = ""
    artifacts_s3_create_bucket: bool = False
    artifact_retention_days: int = Field(default=90, ge=1, le=400)
    artifact_max_bytes: int = Field(default=10 * 1024**3, ge=1024)
    cache_max_bytes: int = Field(default=10 * 1024**3, ge=0)
    cache_default_branch: str = "main"
    actions_token_secret: str = ""
    actions_token_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    actions_signed_url_ttl_seconds: int = Field(default=3600, ge=10)
    actions_public_url: str = ""
    artifacts_sweep_interval_seconds: float = Field(default=300.0, gt=0)
    actions_url: str = "https://github.com"
    actions_cache_dir: Path = Path("./actions-cache")
    actions_git_timeout_seconds: float = Field(default=300.0, gt=0)
    # --- security (hostile input and builds) ---
    # Local runner step isolation: auto (namespaces when bubblewrap works here, else none),
    # namespaces (refuse to start without them), none (process groups + tracking variable).
    local_isolation: Literal["auto", "namespaces", "none"] = "auto"
    # Under namespaces: one sandbox per job whose launcher spawns the steps (job), or a bwrap
    # per step as before issue #15 (step: 2-3 ms more per step, kept as a fallback switch).
    local_sandbox: Literal["job", "step"] = "job"
    # A build id whose handling fails this many times goes to the dead-letter queue.
    queue_max_deliveries: int = Field(default=10, ge=1, le=1000)
    # Fernet key(s) sealing build secrets; empty: a key file next to a SQLite database.
    secrets_key: str = ""
    secrets_retention_days: float = Field(default=30.0, ge=0)
    secrets_purge_interval_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return value

    @field_validator("api_tokens")
    @classmethod
    def _check_tokens(cls, value: str) -> str:
        parse_tokens(value)
        return value

    @model_validator(mode="after")
    def _check_kubernetes(self) -> Settings:
        if self.runner == "kubernetes" and not self.k8s_marker_secret:
            raise ValueError(
                "RUNNER=kubernetes needs K8S_MARKER_SECRET (the same random value on every "
                "replica), so step markers cannot be forged and builds can be re-attached"
            )
        return self

    @model_validator(mode="after")
    def _check_artifact_storage(self) -> Settings:
        if self.artifacts_storage == "s3" and not self.artifacts_s3_bucket:
            raise ValueError("ARTIFACTS_STORAGE=s3 needs ARTIFACTS_S3_BUCKET")
        return self

    @property
    def tokens(self) -> list[ApiToken]:
        return parse_tokens(self.api_tokens)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        path = self.database_url.split("://", 1)[1].split("?", 1)[0]
        return Path(path[1:]) if path.startswith("/") else None

    @property
    def paths_hidden_from_steps(self) -> tuple[Path, ...]:
        """What a sandboxed local step must not see: the service's working directory (its
        `.env`, a relative SQLite file), the source tree, HOME (kubeconfig, .pgpass) and the
        SQLite database file. WORKSPACE_ROOT is hidden too, except the job's own dir."""
        paths = [Path.cwd(), PROJECT_ROOT, Path.home()]
        if self.sqlite_path is not None:
            paths.append(self.sqlite_path.resolve())
        return tuple(paths)

    @property
    def service_secrets(self) -> list[str]:
        """The service's own credentials, masked in every build log whatever the isolation."""
        values = [token.token for token in self.tokens]
        from sqlalchemy.engine import make_url

        try:
            password = make_url(self.database_url).password
        except Exception:  # a URL SQLAlchemy cannot parse has no password we could mask
            password = None
        if password:
            values.append(str(password))
        if self.k8s_marker_secret:
            values.append(self.k8s_marker_secret)
        values.extend(k.strip() for k in self.secrets_key.split(",") if k.strip())
        return values


def parse_tokens(value: str) -> list[ApiToken]:
    tokens: list[ApiToken] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or not parts[0] or not parts[1] or parts[2] not in ("read", "write"):
            raise ValueError(
                "API_TOKENS entries must look like name:token:read or name:token:write"
            )
        role: Literal["read", "write"] = "write" if parts[2] == "write" else "read"
        tokens.append(ApiToken(parts[0], parts[1], role))
    return tokens


@lru_cache
def get_settings() -> Settings:
    return Settings()
