# (No "# syntax=" line: that would pull a frontend image from a registry; the engine's built-in BuildKit frontend
# already supports RUN --mount.)
# CUDA image for the t4/a100 targets. It builds on a machine without a GPU: the CUDA userspace comes from
# pip wheels (torch's nvidia-* dependencies, onnxruntime-gpu), so any Python base image works. TensorRT's
# libraries live on NVIDIA's own package index: pass TENSORRT_INDEX_URL (forwarded as a build secret like the
# other pip settings) to get them; without it the image says plainly that it lacks TensorRT.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# Only the args the install steps use are declared up here: an ARG changes the cache key of every RUN
# after it, so the per-commit ones (GIT_COMMIT, digests) come last and a new commit re-uses the installed layers.
ARG BASE_IMAGE LOCK TARGET EXTRAS
RUN (command -v useradd >/dev/null && useradd -m -u 1000 harness) || adduser --disabled-password --uid 1000 harness
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY targets/locks /src/targets/locks
COPY images /src/images
# No wheelhouse here: `torch==2.13.0` would also match a local "+cpu" wheel, and this image needs PyPI's CUDA one.
RUN --mount=type=secret,id=pipenv --mount=type=secret,id=pipcert \
    sh /src/images/with-pip-settings.sh pip install --quiet -r /src/${LOCK} && \
    sh /src/images/with-pip-settings.sh pip install --quiet --no-deps -r /src/targets/locks/no-deps.txt
RUN --mount=type=secret,id=pipenv --mount=type=secret,id=pipcert \
    TENSORRT_INDEX_URL=$(sed -n 's/^TENSORRT_INDEX_URL=//p' /run/secrets/pipenv 2>/dev/null); \
    if [ -n "${TENSORRT_INDEX_URL}" ]; then \
      sh /src/images/with-pip-settings.sh pip install --quiet --extra-index-url "${TENSORRT_INDEX_URL}" tensorrt && echo "tensorrt installed"; \
    else \
      echo "tensorrt not installed: the image was built without TENSORRT_INDEX_URL (NVIDIA's package index);" \
           "TensorRT cells will report 'tensorrt not installed'" | tee /opt/TENSORRT_MISSING; \
    fi
COPY pyproject.toml README.md /src/
COPY targets /src/targets
COPY harness /src/harness
COPY templates /src/templates
RUN pip install --quiet --no-deps --no-build-isolation -e /src
ARG BASE_DIGEST=unknown GIT_COMMIT=unknown LOCK_SHA256=unknown
LABEL org.ptq-harness.target="${TARGET}" org.ptq-harness.git-commit="${GIT_COMMIT}" \
      org.ptq-harness.base-image="${BASE_IMAGE}" org.ptq-harness.base-digest="${BASE_DIGEST}" \
      org.ptq-harness.lock-sha256="${LOCK_SHA256}"
ENV PTQ_HARNESS_GIT_COMMIT=${GIT_COMMIT} PTQ_HARNESS_BASE_IMAGE=${BASE_IMAGE} \
    PTQ_HARNESS_BASE_DIGEST=${BASE_DIGEST} PTQ_HARNESS_LOCK_SHA256=${LOCK_SHA256} \
    PTQ_HARNESS_CACHE=/home/harness/.cache/ptq-harness
USER harness
WORKDIR /home/harness
CMD ["harness", "list"]
