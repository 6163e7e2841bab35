"""Column types that behave the same on SQLite and Postgres."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints
from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# SQLite only autoincrements a primary key declared exactly INTEGER.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
JSONVariant = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out; SQLite hands back naive values, so we tag them."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- API input types (security): the same input gets the same answer on SQLite and Postgres ----
# Postgres text and jsonb cannot hold NUL; neither database driver can encode a lone surrogate
# (JSON allows "\ud800"); both would fail at INSERT time as a 500 after other work was done.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def check_text(value: str) -> str:
    """No NUL, no lone surrogates: text both databases store as given."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


NAME_MAX = 255  # the size of every name column (jobs, steps, display names)


def clip(text: str, limit: int = NAME_MAX) -> str:
    """A display name cut to what its column holds (a step named after a long `run` line)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_JSON_DEPTH = 64


def check_json_text(value: Any, depth: int = 0) -> None:
    """Every key and string inside a JSON value is valid text; nesting is bounded (a JSON
    document nested thousands deep would exhaust the recursion limit when it is encoded)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"must not be nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(str(key))
            check_json_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json_text(item, depth + 1)


ValidText = AfterValidator(check_text)
Text = Annotated[str, ValidText]  # bounded in bytes by the caller (e.g. MAX_WORKFLOW_BYTES)
# Names stored in 255-character columns: jobs, matrix values in names, steps, triggered_by.
Name = Annotated[str, StringConstraints(min_length=1, max_length=255), ValidText]
ShortText = Annotated[str, StringConstraints(max_length=255), ValidText]
UrlText = Annotated[str, StringConstraints(max_length=2048), ValidText]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
PositiveInt64 = Annotated[int, Field(ge=1, le=INT64_MAX)]
# Used in pipeline_service URLs: no separators, no leading dot ("..", ".hidden"), no controls.
PIPELINE_ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$"
PipelineId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=PIPELINE_ID_PATTERN),
    Field(description="Letters, digits, `.`, `_`, `-`; not starting with a dot."),
]
