# One image for every mopar role: the operator, the prepare Job, slice workers and the
# gateway (`mopar operator|prepare|worker|gateway`). The Helm chart and the operator run it
# as user 10001 with a read-only root filesystem and an emptyDir at /tmp.

# --- build: resolve and install into a virtual environment -------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first (their layer is reused while only the code changes), pinned by the
# same constraints the test suite passed with.
COPY pyproject.toml constraints.txt README.md ./
COPY mopar/__init__.py mopar/__init__.py
COPY slice_runtime/__init__.py slice_runtime/__init__.py
RUN python -m venv /opt/mopar \
 && /opt/mopar/bin/pip install -c constraints.txt . \
 && /opt/mopar/bin/pip uninstall -y mopar
COPY mopar mopar
COPY slice_runtime slice_runtime
RUN /opt/mopar/bin/pip install -c constraints.txt --no-deps . \
 && /opt/mopar/bin/mopar --version

# --- run: the environment only, no compilers, no pip cache, not root ---------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 mopar \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/mopar --create-home --shell /usr/sbin/nologin mopar
COPY --from=build /opt/mopar /opt/mopar
ENV PATH=/opt/mopar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/mopar \
    MPLCONFIGDIR=/tmp/matplotlib \
    MOPAR_CACHE_DIR=/tmp/mopar-cache
USER 10001:10001
WORKDIR /home/mopar
# 8080: slice worker and gateway (HTTP, /metrics); 8081: operator liveness; 9090: operator metrics.
EXPOSE 8080 8081 9090
# Kubernetes probes the roles over HTTP (worker /health/ready, gateway /v2/health/ready,
# operator /healthz on 8081); for plain Docker the same endpoint, per role in MOPAR_HEALTH_URL.
ENV MOPAR_HEALTH_URL=http://127.0.0.1:8080/metrics
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MOPAR_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["mopar"]
CMD ["--help"]
