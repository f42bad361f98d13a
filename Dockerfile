# syntax=docker/dockerfile:1
# mcpgw as a container: `docker build -t mcpgw .` then see README "Run the image".
# Three stages: Node (for npx-based upstream servers), a build stage that installs mcpgw from
# this source tree into a virtualenv, and a slim runtime that gets both and runs as a non-root user.

ARG PYTHON_VERSION=3.11
ARG NODE_VERSION=22

FROM node:${NODE_VERSION}-bookworm-slim AS node

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from: a change to tests or docs does not rebuild this layer. The
# `otel` extra: traces are one setting away (`[telemetry] traces`, or OTEL_TRACES_EXPORTER=otlp);
# `postgres`: the audit log on PostgreSQL (`[audit] url`); `cluster`: replicas sharing state on Redis.
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/mcpgw \
    && /opt/mcpgw/bin/pip install '.[otel,postgres,cluster]' \
    && /opt/mcpgw/bin/mcpgw --version

FROM python:${PYTHON_VERSION}-slim-bookworm
# Node and npm/npx from the official image (Debian's nodejs is too old for current MCP servers).
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && node --version && npx --version \
    && useradd --create-home --uid 10001 --user-group mcpgw \
    # The audit log's directory, owned by the user: a named volume mounted here inherits it.
    && mkdir -p /home/mcpgw/.local/share/mcpgw /etc/mcpgw \
    && chown -R mcpgw:mcpgw /home/mcpgw
COPY --from=build /opt/mcpgw /opt/mcpgw

ENV PATH=/opt/mcpgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric, so `runAsNonRoot` checks (Kubernetes) can verify it without the image.
USER 10001:10001
WORKDIR /home/mcpgw
EXPOSE 8765
# 200 when every upstream is ready, 503 (unhealthy) when one is not: see `/healthz` in the README.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=4)"]
ENTRYPOINT ["mcpgw"]
# Without a mounted registry ($MCPGW_CONFIG or --config), the shipped default (time, everything) is served.
CMD ["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8765"]
