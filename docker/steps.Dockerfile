# homegrown/steps: the CPU image every pipeline step runs in except GPU training (start, clean,
# tokenizer, evaluate, register, promote, finish; also the train step when it runs on CPU or
# only launches a multi-node TrainJob). torch is the CPU wheel; DeepSpeed trains on gloo.
#
#   docker build -f docker/steps.Dockerfile -t homegrown/steps:0.1.0 .      # from the repo root
#
# Every Python package is pinned by docker/requirements.lock (`docker/lock.py` writes it from
# pyproject.toml and the tested .venv); installs use --no-deps and `pip check` proves the lock
# is complete, so nothing unpinned gets in. Runs as UID 10001 with every writable path under
# /tmp: with readOnlyRootFilesystem, mount an emptyDir at /tmp.

FROM python:3.11.15-slim-bookworm AS builder

# The CPU wheel: PyPI's Linux torch is the CUDA build (GBs of nvidia-* wheels).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# PIP_CONSTRAINT also pins the build dependencies of the two sdists (deepspeed, kfp-server-api;
# both pure Python: DS_BUILD_OPS=0 compiles no DeepSpeed op).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CONSTRAINT=/src/docker/requirements.lock \
    DS_BUILD_OPS=0

WORKDIR /src
COPY docker/requirements.lock docker/requirements.lock

# Dependencies first: this layer is rebuilt only when the lock changes.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}+cpu" \
    && /opt/venv/bin/pip install --no-deps --requirement docker/requirements.lock

COPY pyproject.toml README.md ./
COPY components components
COPY pipelines pipelines

RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/homegrown-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/homegrown --help > /dev/null


FROM python:3.11.15-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=unknown

LABEL org.opencontainers.image.title="homegrown-steps" \
      org.opencontainers.image.description="homegrown pipeline steps (CPU): clean, tokenizer, evaluate, register" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 10001 homegrown \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin homegrown

COPY --from=builder /opt/venv /opt/venv

# HOME and every cache under /tmp: the one path that must be writable. Offline by default (no
# model hub, no MLflow telemetry); DS_ACCELERATOR: this torch has no CUDA.
# DL3064 flags TOKENIZERS_PARALLELISM for the word TOKEN; no secret is set here.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    HF_HOME=/tmp/.cache/huggingface \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    TORCH_EXTENSIONS_DIR=/tmp/.cache/torch_extensions \
    HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false \
    DS_ACCELERATOR=cpu \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /tmp
USER 10001:10001

CMD ["homegrown", "--help"]
