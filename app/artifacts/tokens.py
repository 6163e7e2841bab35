"""The per-build runtime token (`ACTIONS_RUNTIME_TOKEN`) and signed blob URLs.

The token is a JWT (HS256, PyJWT) because `@actions/artifact` decodes it: it reads the `scp`
claim and takes the run and job ids from its `Actions.Results:<run>:<job>` scope. We put the build
id there and a short hash of the job name (the scope is split on `:` and job names may contain
one); the job name itself travels in its own claim. The token carries an `exp`, and every request
also checks that its build is still queued or running, so a token dies with its build.

Signed URLs are what the toolkit PUTs blobs to and GETs them from without the token (it hands
them to the Azure SDK or a bare HTTP client): an HMAC over the object, the operation and the
expiry time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

import jwt

ISSUER = "ci-executor"
AUDIENCE = "actions-runtime"
Operation = Literal["upload", "download"]


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class RuntimeClaims:
    build_id: int
    job_name: str


def _key(secret: str, purpose: str) -> bytes:
    """A 32-byte key per purpose derived from the configured secret (any length)."""
    return hashlib.sha256(f"ci-executor:{purpose}:{secret}".encode()).digest()


def job_backend_id(job_name: str) -> str:
    return hashlib.sha256(job_name.encode()).hexdigest()[:32]


def issue_runtime_token(secret: str, build_id: int, job_name: str, ttl_seconds: int) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now - 60,
        "exp": now + ttl_seconds,
        "bid": build_id,
        "job": job_name,
        "scp": f"Actions.GenericRead Actions.Results:{build_id}:{job_backend_id(job_name)}",
    }
    return jwt.encode(claims, _key(secret, "runtime-token"), algorithm="HS256")


def verify_runtime_token(secret: str, token: str) -> RuntimeClaims:
    try:
        claims = jwt.decode(
            token,
            _key(secret, "runtime-token"),
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "bid", "job"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("runtime token expired") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid runtime token: {exc}") from None
    build_id, job_name = claims.get("bid"), claims.get("job")
    if not isinstance(build_id, int) or not isinstance(job_name, str):
        raise InvalidToken("invalid runtime token: bad claims")
    return RuntimeClaims(build_id, job_name)


def _signature(secret: str, kind: str, object_id: int, operation: Operation, expires: int) -> str:
    message = f"{kind}:{object_id}:{operation}:{expires}".encode()
    return hmac.new(_key(secret, "signed-url"), message, hashlib.sha256).hexdigest()


def signed_query(
    secret: str, kind: str, object_id: int, operation: Operation, ttl_seconds: int
) -> str:
    expires = int(time.time()) + ttl_seconds
    return urlencode(
        {
            "se": expires,
            "sp": operation,
            "sig": _signature(secret, kind, object_id, operation, expires),
        }
    )


def check_signature(
    secret: str,
    kind: str,
    object_id: int,
    operation: Operation,
    expires: str | None,
    signature: str | None,
) -> None:
    if not expires or not signature or not expires.isdigit():
        raise InvalidToken("missing signature")
    expected = _signature(secret, kind, object_id, operation, int(expires))
    if not hmac.compare_digest(expected, signature):
        raise InvalidToken("bad signature")
    if int(expires) < time.time():
        raise InvalidToken("signed URL expired")
