# collab-engine in a container: docker build -t collab-engine . (see docs/operations.md)
#   docker run -d -p 8765:8765 -e COLLAB_SECRET="$(openssl rand -hex 32)" \
#       -v collab-data:/var/lib/collab collab-engine
# Repositories live in the volume, under /var/lib/collab/repos (DIR/NAME.git, bare).

# the web editor, built from its pinned npm packages (served at /)
FROM node:20-slim AS web
WORKDIR /web
COPY collab/web/package.json collab/web/package-lock.json ./
RUN npm ci --omit=optional --no-audit --no-fund --loglevel=error
COPY collab/web/build.mjs ./
COPY collab/web/src ./src
RUN npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git is not needed by the engine (dulwich is), but operators reach for it in the volume
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/collab collab \
    && mkdir -p /var/lib/collab/repos /var/lib/collab/data \
    && chown -R collab:collab /var/lib/collab

WORKDIR /opt/collab
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY gitsync ./gitsync
COPY collab ./collab
COPY --from=web /web/dist ./collab/web/dist
RUN pip install .

USER collab
VOLUME ["/var/lib/collab"]
EXPOSE 8765

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=4).status != 200)"]

# SIGTERM (docker stop): connections closed, live edits committed, the store closed
STOPSIGNAL SIGTERM
CMD ["collab", "serve", "--host", "0.0.0.0", "--port", "8765", "--data-dir", "/var/lib/collab/data", "--repos", "/var/lib/collab/repos"]
