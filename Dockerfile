# syntax=docker/dockerfile:1
# ci-executor image: `docker build -t ci-executor .` from the repository root.
# Schema migrations are not run here: the Helm chart runs `ci-executor migrate` once per release
# (a pre-install/pre-upgrade hook Job), so replicas never race each other on the schema.

# ---- web: the BuildList / BuildDetail pages, built to web/dist -------------------------------
# Base images are pinned by digest (a tag can be re-pointed); refresh them deliberately with
# `docker buildx imagetools inspect node:20-slim` / `python:3.11-slim`.
FROM node:20-slim@sha256:1e85773c98c31d4fe5b545e4cb17379e617b348832fb3738b22a08f68dec30f3 AS web
WORKDIR /web
# Manifests first so the dependency layer is reused while only sources change.
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# ---- builder: the app and its runtime dependencies in a venv (no dev extra) ------------------
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt ./
# Dependencies first, at the exact versions of constraints.txt: this layer is reused until
# pyproject.toml or the constraints change, not on every change to app/. Only
# [project.dependencies], never the dev extra (pytest, mypy, ruff ...).
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb')).get('project').get('dependencies')))" > /tmp/requirements.txt \
    && pip install --constraint constraints.txt --requirement /tmp/requirements.txt
COPY app/ ./app/
RUN pip install --no-deps .

# ---- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS runtime
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
