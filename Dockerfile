# One image for the operator, the injector and the sidecar: `aegis operator`,
# `aegis injector`, `aegis sidecar --config /etc/aegis`.
#
# The base is pinned to an exact Python patch release; pin the digest too
# (python:3.11.14-slim-bookworm@sha256:…) in your registry mirror when you build.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY sidecar ./sidecar
# Wheels for the project and its runtime dependencies only (no test extras).
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels aegis-llm \
    && rm -rf /wheels \
    && groupadd --gid 65532 aegis \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin aegis \
    && mkdir -p /var/lib/aegis && chown 65532:65532 /var/lib/aegis
# The sidecar writes its SQLite ledger/spool under /var/lib/aegis (an emptyDir in pods).
WORKDIR /var/lib/aegis
USER 65532:65532
EXPOSE 8787 9787 8443
ENTRYPOINT ["aegis"]
CMD ["--help"]
