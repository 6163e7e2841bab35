"""Deterministic, DNS-1123 names and label values for the objects of one executor installation."""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63

LABEL_BUILD = "ci-executor/build-id"
# Which executor installation (database) created the object: cancel, the orphan sweep and
# re-attach only ever touch their own installation's Jobs, even when several share a namespace.
LABEL_INSTALLATION = "ci-executor/installation"
LABEL_JOB = "ci-executor/job"
LABEL_JOB_ID = "ci-executor/job-id"  # the Kubernetes Job name: selects exactly this job's pods
ANNOTATION_JOB_NAME = "ci-executor/job-name"
CONTAINER = "job"


def slug(text: str, max_len: int = 40) -> str:
    """Lowercase DNS-1123 label fragment of `text` ("test (3.11)" -> "test-3-11"); may be ''."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:max_len].strip("-")


def installation_id(marker_secret: str) -> str:
    """Tells apart executor installations sharing a namespace (their build ids overlap)."""
    return hashlib.sha256(f"installation:{marker_secret}".encode()).hexdigest()[:10]


def k8s_job_name(build_id: int, job_name: str, installation: str = "") -> str:
    """`ci-<build>-<slug>-<hash8>`: deterministic, DNS-1123, at most 63 characters.

    The hash keeps names unique when two job names share a slug ("a b" and "a-b"), and across
    installations: build 1 of one executor database must not find build 1 of another's Job."""
    head = f"ci-{build_id}-"
    key = f"{installation}\0{build_id}\0{job_name}"
    tail = hashlib.sha256(key.encode()).hexdigest()[:8]
    room = MAX_NAME - len(head) - len(tail) - 1
    part = slug(job_name, max(room, 0))
    return f"{head}{part}-{tail}" if part else f"{head}{tail}"


def job_label(job_name: str) -> str:
    """A valid label value naming the job (the real name goes into an annotation)."""
    return slug(job_name, MAX_NAME) or "job"


def service_label(name: str) -> str:
    """A container name for a `services:` entry (DNS label, not clashing with the job's)."""
    return f"svc-{slug(name, MAX_NAME - 4) or 'x'}"
