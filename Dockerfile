# authgate's image: two stages from the same base, so the virtualenv's interpreter path exists in both.
# The base is a build argument: the public default is the official slim Python image; the tests build from a
# local Debian base (python3 at /usr/bin/python3) made with debootstrap, with no registry at all:
#   podman build --build-arg BASE=localhost/base-python:bookworm --pull=never -t authgate .
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# `python3 -m venv` works on both bases; the venv links to whichever python3 the base has.
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY docker/not-in-image.txt ./
# Install the package, then drop what it never imports at run time (docker/not-in-image.txt: litestar's CLI and
# test factories, ~45 MB with Faker) and pip and setuptools: the final image installs nothing.
# kubernetes/aio is the Kubernetes client's asyncio twin (~68 MB, half the package); authgate imports only the
# synchronous client, and nothing outside kubernetes/aio imports it. xds-protos holds every Envoy, xDS,
# OpenTelemetry... proto (~1,600 modules); of its files only those app.grpc_server imports are kept (-I: the
# installed app, not /src/app). Bytecode is compiled once, after the trims, because the root filesystem is
# read-only at run time.
RUN /opt/venv/bin/pip install --no-cache-dir --no-compile . \
 && /opt/venv/bin/pip uninstall --yes -r not-in-image.txt \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
 && /opt/venv/bin/python -I -c "import os, sys, importlib.metadata as md, app.grpc_server; \
used = {os.path.realpath(m.__file__) for m in list(sys.modules.values()) if getattr(m, '__file__', None)}; \
[os.remove(f.locate()) for f in md.files('xds-protos') if f.suffix == '.py' and os.path.realpath(f.locate()) not in used]" \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib

FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="authgate" \
      org.opencontainers.image.description="Kubernetes external-auth validator: Bearer and Basic credentials from a mounted Secret" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# One numeric non-root user, the same UID/GID as the chart's securityContext (10001). The base's own pip, where
# it has one (the official image), goes too: nothing is installed at run time. /etc/authgate/secret is the
# Secret's mount point (read-only, owned by root).
RUN groupadd --system --gid 10001 authgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin authgate \
 && if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall --yes --no-cache-dir pip setuptools wheel; \
    fi \
 && rm -rf /root/.cache \
 && mkdir -p /etc/authgate/secret
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["authgate"]
CMD ["serve"]
