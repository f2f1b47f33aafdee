# login-etl worker image.
#
#   docker build -t login-etl .
#   docker run --rm -e LOGIN_ETL_MASKING_KEY=... login-etl run
#
# BASE_IMAGE defaults to the official slim Python image. Where no registry can
# be reached, scripts/docker-image.sh builds a Debian bookworm base with
# debootstrap + `docker import` and passes it here (bookworm ships Python 3.11).
ARG BASE_IMAGE=python:3.11-slim

# ----------------------------------------------------------------- deps stage
FROM ${BASE_IMAGE} AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/sh", "-eu", "-c"]

# Everything goes into one virtualenv that the runtime stage copies as a whole
# (a venv also keeps pip away from a distro's externally-managed Python).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependency layer: only pyproject.toml is copied, so editing the code neither
# reinstalls the dependencies nor changes their layer in the final image. The
# list is read from pyproject.toml itself (build requirements + dependencies).
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir --requirement /tmp/requirements.txt

# ---------------------------------------------------------------- build stage
FROM deps AS build

# Code: a wheel of the package, built without touching the network again.
COPY README.md ./
COPY service/ ./service/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

# -------------------------------------------------------------- runtime stage
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="login-etl" \
      org.opencontainers.image.description="SQS -> mask -> PostgreSQL worker for user-login events"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 login-etl \
    && useradd --system --uid 10001 --gid login-etl --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin login-etl

# Two layers: the dependencies (changes with pyproject.toml only), then the
# small wheel of the code.
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/login-etl --help > /dev/null

# Bytecode was compiled at install time; never write .pyc at run time (the
# root filesystem is read-only under Kubernetes).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOGIN_ETL_HTTP_PORT=8000 \
    LOGIN_ETL_LOG_FORMAT=json

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000

# No curl in slim images: use the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LOGIN_ETL_HTTP_PORT', '8000') + '/healthz', timeout=4)"]

# Exec form: login-etl is PID 1 and receives SIGTERM itself (drain <= 25 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["login-etl"]
CMD ["run"]
