# (No "# syntax=" line: that would pull a frontend image from a registry; the engine's built-in BuildKit frontend
# already supports RUN --mount.)
# x86 CPU image: torch (CPU) eager and compiled (torchao, g++ for Inductor), ONNX Runtime, OpenVINO + NNCF,
# TensorFlow Lite, LiteRT's PyTorch converter (litert-torch), and IPEX in its own venv.
# Built by `harness container build --target x86-cpu` (or `nox -s images`), which passes these args.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# Only the args the install steps use are declared up here: an ARG changes the cache key of every RUN
# after it, so the per-commit ones (GIT_COMMIT, digests) come last and a new commit re-uses the installed layers.
ARG BASE_IMAGE LOCK TARGET EXTRAS=cpu
RUN (command -v useradd >/dev/null && useradd -m -u 1000 harness) || adduser --disabled-password --uid 1000 harness
# The torch-inductor column compiles C++ when it runs (Inductor's CPU kernels): a compiler in the image, and
# Python's headers where the base image lacks them (the official slim image has them; a Debian python does not).
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ \
      $(python3 -c "import os, sysconfig; print('' if os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) else 'python3-dev')") \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY targets/locks /src/targets/locks
COPY images /src/images
# Every version comes from the target's lock; pip settings arrive as BuildKit secrets (see pip-install.sh).
RUN --mount=type=secret,id=pipenv --mount=type=secret,id=pipcert --mount=type=bind,source=wheelhouse,target=/wheels \
    sh /src/images/with-pip-settings.sh pip install --quiet -r /src/${LOCK} && \
    sh /src/images/with-pip-settings.sh pip install --quiet --no-deps -r /src/targets/locks/no-deps.txt
# Backends that need their own environment, pinned by their own lock (prebuilt: no network at run time).
ENV PTQ_HARNESS_ENVS=/opt/envs
COPY pyproject.toml README.md /src/
COPY targets /src/targets
COPY harness /src/harness
COPY templates /src/templates
RUN --mount=type=secret,id=pipenv --mount=type=secret,id=pipcert \
    pip install --quiet --no-deps --no-build-isolation -e /src && \
    sh /src/images/with-pip-settings.sh harness container prepare-envs --target "${TARGET}"
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
