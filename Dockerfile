# syntax=docker/dockerfile:1
# hydrodiag inference service (docs/OPERATIONS.md, "Docker").
#   CPU (default):  docker build -t hydrodiag:cpu .
#   CUDA:           docker build -t hydrodiag:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# CUDA wheels of torch bundle their CUDA runtime, so one slim base serves both; a GPU host needs only
# the NVIDIA driver and the NVIDIA Container Toolkit.

# Both stages must use the same base: the venv copied into the runtime links to its interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# torch first, from TORCH_INDEX: the installs below then find torch==2.13.0 satisfied and never pull
# PyPI's default build (CUDA, gigabytes larger) into the CPU image. The pin must equal pyproject.toml's
# (tests/test_deploy_files.py checks).
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir torch==2.13.0 --index-url "${TORCH_INDEX}"

WORKDIR /src
# Dependencies in their own layer, keyed on pyproject.toml and constraints.txt alone, so a code change
# rebuilds in seconds; constraints.txt gives the image the versions make setup installs and make bench measured.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

# A regular (non-editable) install: the code, topology templates and migrations live in the venv.
COPY README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps . \
 && pip check \
 && hydrodiag serve --help > /dev/null


FROM ${PYTHON_IMAGE} AS runtime

# MODEL_PATH and DATA_DIR default to folders of a source checkout, which an installed package does not
# have; the image names them. MODEL_DIR is left to the deployment (compose mounts /models).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    MODEL_PATH=/opt/hydrodiag/models/default.ckpt \
    DATA_DIR=/var/lib/hydrodiag

# A fixed uid (10001) lets hosts grant it read access to a mounted model folder.
RUN groupadd --system --gid 10001 hydrodiag \
 && useradd --system --uid 10001 --gid hydrodiag --create-home --home-dir /home/hydrodiag \
        --shell /usr/sbin/nologin hydrodiag \
 && install -d -o hydrodiag -g hydrodiag -m 0750 /var/lib/hydrodiag

COPY --from=builder /opt/venv /opt/venv
COPY models/default.ckpt /opt/hydrodiag/models/default.ckpt
# Fail the build, not the deploy, when the shipped checkpoint does not load with this code.
RUN python -c "from hydrodiag.model.checkpoint import load_checkpoint; load_checkpoint('/opt/hydrodiag/models/default.ckpt')"

WORKDIR /opt/hydrodiag
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8002

# /ready: 200 only once the model is warmed up and the database migrated; it needs no API key.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('API_PORT', '8002') + '/ready', timeout=4)"]

# Exec form: the server is PID 1 (or tini's child with `init: true`) and gets SIGTERM itself, so it
# drains requests and flushes history (SHUTDOWN_TIMEOUT_S). Other commands: `docker run IMAGE commission ...`.
ENTRYPOINT ["hydrodiag"]
CMD ["serve"]
