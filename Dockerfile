# syntax=docker/dockerfile:1.7
# Tuwen images (docs/deploy.md). Targets:
#   gpu          CUDA + cuDNN runtime, onnxruntime-gpu and TensorRT; no torch          (the default target)
#   cpu          Python slim with onnxruntime; no torch
#                (both copy only service/: the training code, `tuwen export` with it, is not in them)
#   gpu-bundled, cpu-bundled   the same with a model bundle baked in: --build-arg BUNDLE_DIR=<dir in context>
#   training     torch + the trainer and exporter, for running training in a container
# The model bundle is mounted read-only at /models/bundle. TensorRT engines are never baked in: a plan only
# runs on the GPU model and TensorRT version that built it, so the entrypoint builds them on the first start
# into TUWEN_ENGINE_CACHE_DIR, which should be a volume.
#
# Layer order keeps rebuilds cheap: system packages, then the Python dependencies (re-run only when
# pyproject.toml changes, against stub packages), then the source (seconds).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Recent onnxruntime-gpu wheels on PyPI (1.31 seen here) are built for CUDA 13 + cuDNN 9; the CUDA base,
# onnxruntime-gpu and TensorRT's wheels must agree on the CUDA major (docs/deploy.md).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- bases: an OS with Python, the user, the dirs
FROM ${PYTHON_IMAGE} AS cpu-os
ENV VIRTUAL_ENV=/opt/venv
RUN python -m venv "$VIRTUAL_ENV"

FROM ${CUDA_IMAGE} AS gpu-os
# Ubuntu 24.04's Python 3.12; versions are left to the CUDA image's pinned release (a pin per package would
# break on every security update of the base).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv
RUN python3 -m venv "$VIRTUAL_ENV"

# ---------------------------------------------------------------- the runtime images
FROM cpu-os AS cpu
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
# The project's own dependency ranges (pyproject.toml) are the pins here. Only service/ exists in this
# stage, so setuptools' package find (service*, training*) installs the service alone.
# EXTRAS: s3 (thumbnails in MinIO/S3); add index (Ray Data) for an image that runs `tuwen index` jobs.
ARG EXTRAS=s3
# hadolint ignore=DL3013
RUN mkdir service && touch service/__init__.py \
    && pip install ".[cpu,${EXTRAS}]" && pip uninstall -y tuwen
COPY service ./service
RUN pip install --no-deps . && rm -rf /src/*
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/tuwen-entrypoint
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/tuwen-healthcheck
# Defaults for a container; every TUWEN_* setting can be overridden at run time.
ENV PYTHONUNBUFFERED=1 TUWEN_HOST=0.0.0.0 TUWEN_PORT=8000 TUWEN_BUNDLE=/models/bundle \
    TUWEN_DATA_DIR=/var/lib/tuwen TUWEN_ENGINE_CACHE_DIR=/var/cache/tuwen/engines
RUN groupadd --system --gid 10001 tuwen \
    && useradd --system --uid 10001 --gid tuwen --home-dir /var/lib/tuwen --shell /usr/sbin/nologin tuwen \
    && mkdir -p /models /var/lib/tuwen /var/cache/tuwen/engines \
    && chown tuwen:tuwen /var/lib/tuwen /var/cache/tuwen/engines
WORKDIR /var/lib/tuwen
USER 10001:10001
EXPOSE 8000
# Healthy = ready: engines warm and Milvus answering. The start period covers a first-start engine build.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 CMD ["tuwen-healthcheck", "/readyz"]
ENTRYPOINT ["tuwen-entrypoint"]
CMD ["serve"]

FROM gpu-os AS gpu
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# TensorRT's Python wheels (runtime + builder libraries) come from NVIDIA's index; match the CUDA major.
ARG TENSORRT_PACKAGES="tensorrt-cu13"
ARG NVIDIA_INDEX=https://pypi.nvidia.com
WORKDIR /src
COPY pyproject.toml README.md ./
ARG EXTRAS=s3
# hadolint ignore=DL3013
RUN mkdir service && touch service/__init__.py \
    && pip install --extra-index-url "$NVIDIA_INDEX" ".[gpu,${EXTRAS}]" ${TENSORRT_PACKAGES} && pip uninstall -y tuwen
COPY service ./service
RUN pip install --no-deps . && rm -rf /src/*
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/tuwen-entrypoint
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/tuwen-healthcheck
ENV PYTHONUNBUFFERED=1 TUWEN_HOST=0.0.0.0 TUWEN_PORT=8000 TUWEN_BUNDLE=/models/bundle \
    TUWEN_DATA_DIR=/var/lib/tuwen TUWEN_ENGINE_CACHE_DIR=/var/cache/tuwen/engines \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN groupadd --system --gid 10001 tuwen \
    && useradd --system --uid 10001 --gid tuwen --home-dir /var/lib/tuwen --shell /usr/sbin/nologin tuwen \
    && mkdir -p /models /var/lib/tuwen /var/cache/tuwen/engines \
    && chown tuwen:tuwen /var/lib/tuwen /var/cache/tuwen/engines
WORKDIR /var/lib/tuwen
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 CMD ["tuwen-healthcheck", "/readyz"]
ENTRYPOINT ["tuwen-entrypoint"]
CMD ["serve"]

# ---------------------------------------------------------------- a bundle baked in (read-only, root-owned)
FROM cpu AS cpu-bundled
ARG BUNDLE_DIR=artifacts/demo/bundle
COPY ${BUNDLE_DIR} /models/bundle

FROM gpu AS gpu-bundled
ARG BUNDLE_DIR=artifacts/demo/bundle
COPY ${BUNDLE_DIR} /models/bundle

# ---------------------------------------------------------------- training: torch (its wheels carry CUDA)
FROM cpu-os AS training
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN mkdir service training && touch service/__init__.py training/__init__.py \
    && pip install ".[cpu,training]" && pip uninstall -y tuwen
COPY service ./service
COPY training ./training
RUN pip install --no-deps . && rm -rf /src/* \
    && groupadd --system --gid 10001 tuwen \
    && useradd --system --uid 10001 --gid tuwen --create-home --home-dir /work --shell /usr/sbin/nologin tuwen
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["tuwen"]
CMD ["--help"]
