# homegrown/trainer: the GPU training image. The single-node train step runs in it
# (`torchrun --standalone`), and so does every node of a multi-node Kubeflow Trainer TrainJob
# (`torchrun -m components.train.worker`, the torch-distributed runtime).
#
#   docker build -f docker/trainer.Dockerfile -t homegrown/trainer:0.1.0 .    # from the repo root
#
# CUDA: torch==2.13.0 from PyPI is the CUDA 13.0 build and brings the CUDA runtime, cuBLAS,
# cuDNN and NCCL as pinned wheels (docker/cuda.lock), so the base is NVIDIA's small `base`
# flavour of the same CUDA (cudart + the driver compatibility env), not `runtime` (a second copy
# of the libraries) nor `devel` (nvcc, gcc). Needs an NVIDIA driver >= 580 on the nodes.
#
# No DeepSpeed op is compiled, at build or at run time, so no nvcc is needed: the worker hands
# DeepSpeed a torch AdamW and a LambdaLR (ZeRO 0-3; CPU offload sets zero_force_ds_cpu_optimizer
# false), so FusedAdam/CPUAdam are never built, and nothing calls torch.compile (Triton would
# want a C compiler). Should an option ever need a DeepSpeed op (its own optimizers, NVMe
# offload), prebuild it in a -devel builder stage (DS_BUILD_FUSED_ADAM=1 ...) rather than
# shipping nvcc here; as it is, DeepSpeed would fail at start-up asking for CUDA_HOME.
#
# Python is Ubuntu 24.04's 3.12 (the steps image and the tests use 3.11); docker/lock.py's
# pins resolve identically for both, and tests/docker checks it.

FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS builder

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CONSTRAINT=/src/docker/requirements.lock \
    DS_BUILD_OPS=0

# OS packages come from the base image's Ubuntu release; see docker/.hadolint.yaml (DL3008).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY docker/requirements.lock docker/cuda.lock docker/

# torch from PyPI (the CUDA build); its nvidia-*/triton wheels are pinned by cuda.lock.
RUN python3.12 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps --requirement docker/requirements.lock --requirement docker/cuda.lock

COPY pyproject.toml README.md ./
COPY components components
COPY pipelines pipelines

RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/homegrown-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/homegrown --help > /dev/null


FROM nvidia/cuda:13.0.2-base-ubuntu24.04

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=unknown

LABEL org.opencontainers.image.title="homegrown-trainer" \
      org.opencontainers.image.description="homegrown training: torch (CUDA 13.0) + DeepSpeed, run by torchrun" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The interpreter the venv links to, and nothing to build with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 homegrown \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin homegrown

COPY --from=builder /opt/venv /opt/venv

# HOME and every cache under /tmp: the one path that must be writable (an emptyDir under
# readOnlyRootFilesystem). Offline by default; DS_ACCELERATOR unset: DeepSpeed picks CUDA when
# a GPU is there (and the launcher sets cpu when none is).
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
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /tmp
USER 10001:10001

CMD ["torchrun", "--help"]
