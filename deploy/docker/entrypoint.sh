#!/bin/sh
# Container entrypoint: `serve` builds the TensorRT engines for this GPU on the first start (cached in
# TUWEN_ENGINE_CACHE_DIR, a volume, because plans are tied to the GPU model and TensorRT version), then
# runs the service. Any other command runs as `tuwen <command>`. ENGINES_ON_START=never skips the build.
set -eu

has_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

has_tensorrt() {
    python -c "import tensorrt" >/dev/null 2>&1
}

if [ "${1:-serve}" = "serve" ] && [ "${ENGINES_ON_START:-auto}" != "never" ] \
    && [ "${TUWEN_BACKEND:-auto}" != "onnxruntime" ] && has_gpu && has_tensorrt; then
    # Engines are built for the largest batch the service forms (the batcher's limits).
    text_batch="${TUWEN_MAX_BATCH_TEXT:-64}"
    image_batch="${TUWEN_MAX_BATCH_IMAGE:-16}"
    max_batch=$((text_batch > image_batch ? text_batch : image_batch))
    # Idempotent: returns at once when the cache already holds engines for this GPU and TensorRT version.
    echo "tuwen-entrypoint: TensorRT engines for this GPU -> ${TUWEN_ENGINE_CACHE_DIR:-the bundle}" >&2
    tuwen build-engines "${TUWEN_BUNDLE}" --fp16 --max-batch "$max_batch"
fi

exec tuwen "$@"
