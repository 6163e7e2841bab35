# syntax=docker/dockerfile:1
# ci-executor image: `docker build -t ci-executor .` from the repository root.
# Schema migrations are not run here: the Helm chart runs `ci-executor migrate` once per release
# (a pre-install/pre-upgrade hook Job), so replicas never race each other on the schema.

# ---- web: the BuildList / BuildDetail pages, built to web/dist -------------------------------
FROM node:20-slim AS web
WORKDIR /web
# Manifests first so the dependency layer is reused while only sources change.
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# ---- builder: the app and its runtime dependencies in a venv (no dev extra) ------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY app/ ./app/
# A plain install: only [project.dependencies], never the dev extra (pytest, mypy, ruff ...).
RUN pip install .

# ---- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=10056 \
    WORKSPACE_ROOT=/tmp/workspaces
RUN groupadd --system --gid 10001 ci \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin ci
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# `ci-executor migrate` reads alembic.ini and migrations/ from the working directory.
COPY alembic.ini ./
COPY migrations/ ./migrations/
COPY --from=web /web/dist ./web/dist
USER 10001:10001
EXPOSE 10056
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '10056'), timeout=4)"]
ENTRYPOINT ["ci-executor"]
CMD ["serve"]
