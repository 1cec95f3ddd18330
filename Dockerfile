# One image for the operator, the injector and the sidecar: `aegis operator`,
# `aegis injector`, `aegis sidecar --config /etc/aegis`.
#
# The base is pinned to an exact Python patch release; pin the digest too
# (python:3.11.14-slim-bookworm@sha256:…) in your registry mirror when you build.
# Any Debian-like image with python3 >= 3.11, its venv module, useradd and groupadd
# works as well: the test bed builds from a base made with mmdebstrap from Debian's
# packages (`--build-arg PYTHON_IMAGE=localhost/aegis-python-base:<key>`).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Optional, for builds behind a private index or a TLS-inspecting proxy: pip reads them
# from the environment (unset when not given).
ARG PIP_INDEX_URL
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md uv.lock ./
COPY operator ./operator
COPY sidecar ./sidecar
# A virtual environment under /opt: the same path on both kinds of base, and Debian's
# own python3 refuses `pip install` outside one (PEP 668). Runtime dependencies and the
# `fast` (uvloop) and `tracing` (OpenTelemetry) extras only (no test extras), exactly as uv.lock pins them, hashes checked; uv runs from a
# throwaway venv of the build stage. pip precompiles the bytecode, so a read-only root
# never needs it.
RUN python3 -m venv /tmp/uv && /tmp/uv/bin/pip install --no-warn-script-location "uv>=0.4,<1" \
    && python3 -m venv /opt/aegis \
    && /tmp/uv/bin/uv export --frozen --no-dev --extra fast --extra tracing --no-emit-project --format requirements-txt \
       --output-file /tmp/requirements.txt \
    && /opt/aegis/bin/pip install --no-warn-script-location --require-hashes \
       -r /tmp/requirements.txt \
    && /opt/aegis/bin/pip install --no-warn-script-location --no-deps . \
    && /opt/aegis/bin/aegis --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
# The venv's python is a symlink to the base's python3, identical in both stages.
COPY --from=build /opt/aegis /opt/aegis
RUN groupadd --gid 65532 aegis \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/aegis \
       --shell /usr/sbin/nologin aegis \
    && mkdir -p /var/lib/aegis && chown 65532:65532 /var/lib/aegis
# Nothing writes to the root filesystem: no bytecode, a HOME and TMPDIR that pods mount
# as emptyDir volumes (the sidecar's SQLite ledger and spool live under /var/lib/aegis).
ENV PATH=/opt/aegis/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/var/lib/aegis
WORKDIR /var/lib/aegis
USER 65532:65532
EXPOSE 8787 9787 8443
ENTRYPOINT ["aegis"]
CMD ["--help"]
